"""--enable/--disable-admission-plugins: which plugins run, by kube's plugin names, and the flags' checks."""

from __future__ import annotations

import pytest

from pocketkube.apiserver import admission, csr, rbac_escalation


def test_default_chain_is_every_plugin_in_order() -> None:
    """Without flags every plugin runs, in the chain's fixed order."""
    assert admission.chain() == admission.PLUGINS


def test_disabled_plugins_leave_the_chain() -> None:
    """Disabled plugins are dropped; the others keep their order."""
    out = admission.chain(disable=("NamespaceLifecycle", "ResourceQuota"))
    assert admission.namespace_lifecycle not in out
    assert [p for p in admission.PLUGINS if p in out] == out
    assert len(out) == len(admission.PLUGINS) - 2


def test_registry_checks_cannot_be_disabled() -> None:
    """RBAC escalation checks, the CSR requester stamp and Service IP allocation are not admission plugins in kube."""
    out = admission.chain(disable=tuple(sorted(admission.DEFAULT_ON)))
    assert out == [p for p in admission.PLUGINS if p not in admission.NAMES]
    assert {rbac_escalation.check, csr.stamp, admission.service_allocation} <= set(out)


@pytest.mark.parametrize(("disable", "runs"), [
    (("CertificateApproval",), True), (("CertificateApproval", "CertificateSigning"), True),
    (("CertificateApproval", "CertificateSigning", "CertificateSubjectRestriction"), False),
])
def test_csr_checks_run_while_any_of_their_plugins_is_on(disable: tuple[str, ...], runs: bool) -> None:
    """The one CSR plugin stands for three kube plugins: it is dropped only when all three are."""
    assert (csr.admit in admission.chain(disable=disable)) is runs


def test_disabling_an_unimplemented_plugin_is_accepted() -> None:
    """A real kube plugin pocketkube lacks may be disabled (it is off anyway)."""
    assert admission.chain(disable=("AlwaysPullImages", "TaintNodesByCondition")) == admission.PLUGINS


@pytest.mark.parametrize(("enable", "disable", "message"), [
    (("Bogus",), (), 'enable-admission-plugins plugin "Bogus" is unknown'),
    ((), ("Bogus",), 'disable-admission-plugins plugin "Bogus" is unknown'),
    (("Priority", "LimitRanger"), ("LimitRanger", "Priority"),
     "[LimitRanger Priority] in enable-admission-plugins and disable-admission-plugins overlapped"),
    (("EventRateLimit",), (), "admission plugin(s) EventRateLimit are not implemented by pocketkube"),
])
def test_bad_plugin_flags(enable: tuple[str, ...], disable: tuple[str, ...], message: str) -> None:
    """Unknown names, overlaps and unimplemented plugins are refused with kube-apiserver's wording."""
    with pytest.raises(ValueError) as info:
        admission.chain(enable=enable, disable=disable)
    assert str(info.value) == message
