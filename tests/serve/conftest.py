"""Tiny saved models for the serving tests and a real uvicorn server on a free port, run in a thread.

The Llama is random (vocab 384, 2 layers, GQA) with a long context, so a request with `ignore_eos` can
keep a batch slot busy for as long as a test needs; the classifier is a genforge classify run of two steps.
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import uvicorn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from genforge.serve.app import create_app
from genforge.serve.config import ServeConfig
from genforge.serve.server import build_state


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=32768,
                      initializer_range=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return save_folder(LlamaForCausalLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256, initializer_range=0.1,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return save_folder(GPT2LMHeadModel(cfg).eval(), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    from genforge.finetune.classify import classify
    from genforge.finetune.config import ClassifyConfig

    root = tmp_path_factory.mktemp("classifier")
    torch.manual_seed(0)
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, pad_token_id=0)
    base = save_folder(BertForMaskedLM(bert).eval(), tokenizer, root / "bert")
    rows = ["text,label"] + [f"good news {i},positive" for i in range(12)] + [f"bad news {i},negative"
                                                                            for i in range(12)]
    (root / "data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return classify(ClassifyConfig(model=base, data=root / "data.csv", out=root / "run", max_steps=2, batch_size=8,
                                   seq_len=32, warmup_steps=1, eval_every=2, log_every=1, bf16=False))


@contextmanager
def running(cfg: ServeConfig) -> Iterator[tuple[str, object]]:
    """(base URL, ServerState) of a live server for `cfg`, on a free port, until the block ends."""
    state = build_state(cfg)
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=0, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def serve_cfg(tmp_path, llama_dir):
    """serve_cfg(**overrides) -> a ServeConfig of the tiny Llama with a database in the test's folder."""

    def make(**overrides) -> ServeConfig:
        values = dict(model=llama_dir, name="tiny", db=f"sqlite:///{tmp_path / 'serve.db'}", max_batch=8,
                      cache_len=4096)
        values.update(overrides)
        return ServeConfig(**values)

    return make


@pytest.fixture(scope="module")
def server(tmp_path_factory, llama_dir, classifier_dir, gpt2_dir):
    """One shared live server: the tiny Llama ("tiny"), the classifier ("cls") and GPT-2 ("gpt2", HF backend)."""
    db = tmp_path_factory.mktemp("db") / "serve.db"
    cfg = ServeConfig(model=llama_dir, name="tiny", variant=[f"cls={classifier_dir}", f"gpt2={gpt2_dir}"],
                      db=f"sqlite:///{db}", max_batch=8, cache_len=4096)
    with running(cfg) as (url, state):
        yield url, state


@pytest.fixture(scope="session")
def live():
    """live(cfg) -> context manager of (base URL, ServerState) of a server for `cfg`."""
    return running


@pytest.fixture(scope="session")
def oai():
    """oai(url, key="none") -> the official OpenAI client on a genforge server (no retries)."""
    import openai

    return lambda url, key="none": openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def _pg_bin() -> Path:
    import glob
    import shutil

    found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)),
                                           None)
    assert found, "PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)"
    return Path(found).parent


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free port (run as `nobody` when the tests run as root, since
    PostgreSQL refuses root), as a SQLAlchemy URL with the psycopg 3 driver; removed afterwards."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    bin_dir = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="genforge-pg-", dir="/tmp"))
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "nobody")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    subprocess.run([*as_user, bin_dir / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-l", root / "log", "-w", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"], check=True,
                   capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
