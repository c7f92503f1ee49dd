"""A damaged checkpoint fails to load as one line naming its file; the CUDA generator state a resume restores."""

import pytest
import torch

from genforge.errors import ArtifactError
from genforge.train.checkpoint import WEIGHTS, cuda_rng, load_checkpoint, save_checkpoint


def test_truncated_checkpoint_weights_name_the_file(tmp_path):
    model = torch.nn.Linear(64, 64)
    folder = tmp_path / "latest"
    save_checkpoint(folder, model, {"step": 3})
    assert load_checkpoint(folder, torch.nn.Linear(64, 64))["step"] == 3
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:1000])
    with pytest.raises(ArtifactError, match=r"latest/model.safetensors is corrupt \(.*\): re-copy it or retrain"):
        load_checkpoint(folder, torch.nn.Linear(64, 64))


def test_a_checkpoint_of_other_sizes_is_one_line(tmp_path):
    folder = tmp_path / "latest"
    save_checkpoint(folder, torch.nn.Linear(64, 64), {"step": 3})
    with pytest.raises(ArtifactError, match=r"does not fit the model: bias is \(64,\) there, \(32,\) here \(2 tensors "
                                            r"differ\); resume with the run's own sizes"):
        load_checkpoint(folder, torch.nn.Linear(64, 32))


def test_a_resume_restores_one_cuda_generator_whatever_the_gpus_saved():
    """A checkpoint holds the trained device's CUDA generator state; an older one holds every device the main
    process saw (8 here), and restoring them all fails with fewer GPUs visible: only the trained (first) one is."""
    per_device = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    assert cuda_rng(per_device) is per_device[0]
    assert cuda_rng(per_device[3]) is per_device[3]


def test_a_save_removes_what_killed_saves_of_other_processes_left(tmp_path):
    """A kill mid-save leaves `.latest.tmp-PID` (a half-written checkpoint, as large as the model) and a kill
    between the renames `.latest.old-PID`; their names hold the dead process's id, so only a sweep at the next
    successful save removes them. Left, they fill the disk run after run, and an old one could be resumed."""
    folder = tmp_path / "latest"
    save_checkpoint(folder, torch.nn.Linear(8, 8), {"step": 1})
    (tmp_path / ".latest.tmp-999999").mkdir()
    (tmp_path / ".latest.tmp-999999" / WEIGHTS).write_bytes(b"half")
    save_checkpoint(tmp_path / ".latest.old-999998", torch.nn.Linear(8, 8), {"step": 0})
    save_checkpoint(folder, torch.nn.Linear(8, 8), {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest"]
    assert load_checkpoint(folder, torch.nn.Linear(8, 8))["step"] == 2
