"""PodSecurity's namespace policy: labels win, and namespaces without pod-security labels get the defaults."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import podsecurity
from pocketkube.apiserver import admission_podsecurity as psa

_BASELINE = podsecurity.LevelVersion(podsecurity.BASELINE)
_DEFAULTS = podsecurity.Policy(enforce=_BASELINE, audit=_BASELINE, warn=_BASELINE)


@pytest.mark.parametrize(("labels", "defaults", "want"), [
    (None, podsecurity.Policy(), podsecurity.Policy()),
    ({"kubernetes.io/metadata.name": "ns"}, podsecurity.Policy(), podsecurity.Policy()),
    ({"kubernetes.io/metadata.name": "ns"}, _DEFAULTS, _DEFAULTS),
    ({"app": "x", "pod-security.kubernetes.io/enforce": "restricted"}, _DEFAULTS,
     podsecurity.Policy(enforce=podsecurity.LevelVersion(podsecurity.RESTRICTED), audit=_BASELINE, warn=_BASELINE)),
])
def test_policy_from_namespace(labels: dict[str, Any] | None, defaults: podsecurity.Policy,
                               want: podsecurity.Policy) -> None:
    """The plugin's policy equals policy_from_labels' for labelled and unlabelled namespaces alike."""
    plugin = psa.PodSecurity(psa.Settings(defaults=defaults))
    ns: dict[str, Any] = {"metadata": {"name": "ns", **({"labels": labels} if labels is not None else {})}}
    policy, errs = plugin._policy(ns)
    assert (policy, errs) == (want, [])
    assert (policy, errs) == podsecurity.policy_from_labels(labels, defaults)


def test_bad_label_still_reports_its_error() -> None:
    """A namespace with a malformed pod-security label still yields the field error (no fast path)."""
    plugin = psa.PodSecurity()
    policy, errs = plugin._policy({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "bogus"}}})
    assert policy.enforce.level == podsecurity.RESTRICTED
    assert len(errs) == 1
