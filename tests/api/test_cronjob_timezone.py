"""CronJob spec.timeZone validation with kube's exact messages (validateTimeZone and Go's time.LoadLocation)."""

import copy

import pytest

from pocketkube.api import defaults, validation


def _cronjob(tz):
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}
    cj = {"kind": "CronJob", "metadata": {"name": "cj", "namespace": "default"},
          "spec": {"schedule": "* * * * *", "timeZone": tz, "jobTemplate": {"spec": {"template": {"spec": pod}}}}}
    defaults.apply_defaults(cj, "batch", "v1", "CronJob")
    return cj


def _tz_errors(obj, old=None):
    errs = (validation.validate_create(obj, "batch", "v1", "CronJob", namespaced=True) if old is None else
            validation.validate_update(obj, old, "batch", "v1", "CronJob", namespaced=True))
    return [e.text() for e in errs if e.text().startswith("spec.timeZone")]


LOCAL = "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones"


@pytest.mark.parametrize("tz,want", [
    ("Europe/Paris", []),
    ("Etc/GMT+5", []),
    ("UTC", []),
    ("America/Argentina/Buenos_Aires", []),
    ("Mars/Olympus_Mons", ['spec.timeZone: Invalid value: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons']),
    ("Europe/Pariss", ['spec.timeZone: Invalid value: "Europe/Pariss": unknown time zone Europe/Pariss']),
    ("europe/paris", ['spec.timeZone: Invalid value: "europe/paris": unknown time zone europe/paris']),
    ("", ['spec.timeZone: Invalid value: "": timeZone must be nil or non-empty string']),
    ("Local", [f'spec.timeZone: Invalid value: "Local": {LOCAL}']),
    # LoadLocation knows "Local" only spelled so: any other case is also an unknown zone.
    ("local", [f'spec.timeZone: Invalid value: "local": {LOCAL}',
               'spec.timeZone: Invalid value: "local": unknown time zone local']),
    ("Europe/../Paris", ['spec.timeZone: Invalid value: "Europe/../Paris": unknown time zone Europe/../Paris']),
    ("Europe/a..b", ['spec.timeZone: Invalid value: "Europe/a..b": time: invalid location name']),
    ("America/Fifteen_chars__", ['spec.timeZone: Invalid value: "America/Fifteen_chars__": '
                                "unknown time zone America/Fifteen_chars__"]),
    ("-Europe/Paris", ['spec.timeZone: Invalid value: "-Europe/Paris": unknown time zone -Europe/Paris']),
    ("/etc/localtime", ['spec.timeZone: Invalid value: "/etc/localtime": unknown time zone /etc/localtime']),
])
def test_time_zone_on_create(tz, want):
    """A timeZone is checked for its name's form, "Local" and whether the tz database has it."""
    assert _tz_errors(_cronjob(tz)) == want


def test_unchanged_time_zone_is_not_checked_again_on_update():
    """An update that keeps the stored timeZone does not re-check it (kube validates only a changed one)."""
    old = _cronjob("Mars/Olympus_Mons")
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    assert _tz_errors(new, old) == []
    new["spec"]["timeZone"] = "Mars/Valles"
    assert _tz_errors(new, old) == ['spec.timeZone: Invalid value: "Mars/Valles": unknown time zone Mars/Valles']
