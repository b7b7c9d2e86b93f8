"""An image never records credentials: a checkpoint URL's userinfo and signature are masked in
its labels, and nothing of the project's store (URL, options) is in its Dockerfile or ENV."""

from __future__ import annotations

from pathlib import Path

from tests.images.test_plan import make_function, plan_for

SECRET = "wJalrXUtnFEMI-K7MDENG"
SIGNATURE = "ab12cd34ef56"
PREDICT = f"""\
from fnserve import predict


def load(path):
    return 1.0


@predict(loader=load, checkpoint="s3://AKIAFAKEKEYID:{SECRET}@models/recs?X-Amz-Signature={SIGNATURE}")
def weighted(model, x: float) -> float:
    return model * x
"""


def test_labels_mask_a_checkpoint_urls_credentials(tmp_path: Path) -> None:
    make_function(tmp_path, source=PREDICT)
    plan = plan_for(tmp_path)
    shown = "s3://***@models/recs?X-Amz-Signature=***@latest"
    assert plan.labels["io.fnserve.checkpoint"] == shown
    assert plan.checkpoint == shown
    for text in (*plan.labels.values(), plan.dockerfile):
        assert SECRET not in text and SIGNATURE not in text and "AKIAFAKEKEYID" not in text


def test_the_dockerfile_names_no_store_but_the_baked_one(tmp_path: Path) -> None:
    make_function(tmp_path, source=PREDICT)
    env_lines = [line for line in plan_for(tmp_path).dockerfile.splitlines() if "FNSERVE_STORE" in line]
    assert env_lines == ["ENV FNSERVE_STORE="]  # the store comes from the environment at run time
