"""Generated Kubernetes protobuf wire table (types.json), written by scripts/gen_proto_types.py."""
