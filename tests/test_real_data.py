"""Checks on the real benchmark data in ``../shared/data`` (skipped where it is absent)."""

import pytest

from medseg.data import scan
from tests.conftest import SHARED_DATA, requires_shared_data


@pytest.mark.slow
@requires_shared_data
def test_scan_real_data():
    report = scan(SHARED_DATA)
    assert not report.errors
    groups = {(g.modality, g.dataset): g for g in report.groups}
    assert groups[("dermoscopy", "ph2")].files == 200
    assert groups[("fundus", "drive")].files == 40
    assert groups[("microscopy", "dsb2018")].labeled == 400
    assert all(g.files == g.labeled == g.slices for g in report.groups)
