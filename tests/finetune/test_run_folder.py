"""The output folder of the fine-tuning commands is checked before their data are read."""

import re

import pytest

from genforge.errors import ArtifactError
from genforge.finetune.classify import classify
from genforge.finetune.config import ClassifyConfig, DpoConfig, SftConfig
from genforge.finetune.dpo import dpo
from genforge.finetune.sft import sft

COMMANDS = {"sft": (SftConfig, sft), "dpo": (DpoConfig, dpo), "classify": (ClassifyConfig, classify)}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_resume_with_nothing_to_resume_is_refused_before_the_data_are_read(tmp_path, llama_dir, command, folder):
    """`--resume` into an empty or missing folder was refused only after the data were read and tokenised
    (and, for DPO, scored by the reference model): minutes on real data. The data here cannot be read, so
    a command that reads them first fails on them instead."""
    data = tmp_path / "unreadable.jsonl"
    data.write_text("{not json\n", encoding="utf-8")
    out = tmp_path / folder
    if folder == "empty":
        out.mkdir()
    config_cls, run = COMMANDS[command]
    nothing = re.escape(f"nothing to resume: {out / 'checkpoints' / 'latest'} does not exist; drop --resume")
    with pytest.raises(ArtifactError, match=f"^{nothing}$"):
        run(config_cls(model=llama_dir, data=data, out=out, resume=True))
    assert out.exists() == (folder == "empty")  # nor was a folder made
