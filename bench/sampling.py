"""``wan bench sample``: the prompt suite as a sampling job (``wanmodel.pipelines.batch``) for any model the project
can sample. The suite's JSONL is the sample job's ``prompts_file`` as it is (its records carry ``prompt``; the job
ignores the metadata keys), so the ``samples`` rows keep the suite's prompt text and the bench job finds each
prompt's metadata by it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.jobconfig import apply_overrides


def sample_job_config(suite: str, lake: str, *, random_tiny: bool = False, dit: str | None = None,
                      vae: str | None = None, text_encoder: str | None = None,
                      overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """A validated sample job config (as a plain mapping, ready for YAML) that samples every suite prompt."""
    from bench.inputs import read_suite
    from wanmodel.pipelines.batch import SampleJobConfig

    prompts, _ = read_suite(suite)  # a bad suite line is an error here, not a silent skip in the sample job
    if not prompts:
        raise ValueError(f"the prompt suite {suite} has no prompt")
    models: dict[str, Any] = {"random_tiny": True} if random_tiny else \
        {k: v for k, v in {"dit": dit, "vae": vae, "text_encoder": text_encoder}.items() if v}
    data = apply_overrides({"lake": lake, "task": "t2v", "prompts_file": str(Path(suite).resolve()),
                            "models": models}, overrides)
    SampleJobConfig(**data)  # refuse a config the sample job would refuse
    return data
