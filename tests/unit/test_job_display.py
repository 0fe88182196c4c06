"""``regcast jobs`` / ``status`` lines: a job by digest reads ``image@sha256:...``, as docker writes it."""

from __future__ import annotations

import pytest

from regcast.console import remote

DIGEST = "sha256:" + "ab" * 32


def test_a_job_by_digest_is_shown_with_an_at(capsys: pytest.CaptureFixture[str]) -> None:
    remote._print_status(
        {
            "id": "j1",
            "value": "FINISHED",
            "source": {"endpoint": "http://127.0.0.1:5000/v2", "image": "team/app", "ref": DIGEST},
            "source_digest": DIGEST,
            "targets": [
                {"state": "FINISHED", "endpoint": "http://127.0.0.1:5001/v2", "image": "team/app", "ref": DIGEST}
                | {"bytes_done": 1, "bytes_total": 1},
                {"state": "FINISHED", "endpoint": "http://127.0.0.1:5001/v2", "image": "team/app", "ref": "1.0"}
                | {"bytes_done": 1, "bytes_total": 1},
            ],
        }
    )
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"source  http://127.0.0.1:5000/v2 team/app@{DIGEST}  {DIGEST}"  # was team/app:sha256:...
    assert out[2] == f"  FINISHED  http://127.0.0.1:5001/v2 team/app@{DIGEST}  1/1"
    assert out[3] == "  FINISHED  http://127.0.0.1:5001/v2 team/app:1.0  1/1"
