import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets laid beside the repository (../shared/data), as in CI."""
    assert SHARED_DATA.is_dir(), f"real test data expected at {SHARED_DATA} (see shared/data/README.md)"
    return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer(shared_data):
    """A 384-token byte-level BPE of tiny-shakespeare, with genforge's special tokens and chat template."""
    from genforge.data.tokenizer import build_bpe, wrap_for_transformers

    text = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:50_000]
    return wrap_for_transformers(build_bpe(iter(text.split("\n\n")), 384, show_progress=False))


@pytest.fixture(scope="session")
def save_folder():
    """save_folder(model, tokenizer, folder) -> folder: a tiny model saved as an HF model folder."""

    def save(model, tokenizer, folder: Path) -> Path:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return folder

    return save


# ---- tiny saved models and live servers, shared by the serving and application tests -------------------


@pytest.fixture(scope="session")
def llama_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    """A random Llama (vocab 384, 2 layers, GQA) with a long context, so a request with `ignore_eos` can keep
    a batch slot busy for as long as a test needs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=32768,
                      initializer_range=0.1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return save_folder(LlamaForCausalLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    """A genforge classify run of two steps (positive/negative) over a tiny BERT."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

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
def running(app_or_cfg) -> Iterator[tuple[str, object]]:
    """(base URL, state) of a live uvicorn server on a free port, in a thread, until the block ends.

    Takes a `ServeConfig` (state = its ServerState) or an already built ASGI app (state = None)."""
    import uvicorn

    from genforge.serve.app import create_app
    from genforge.serve.config import ServeConfig
    from genforge.serve.server import build_state

    state = build_state(app_or_cfg) if isinstance(app_or_cfg, ServeConfig) else None
    app = create_app(state) if state is not None else app_or_cfg
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False))
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


@pytest.fixture(scope="session")
def live():
    """live(cfg_or_app) -> context manager of (base URL, ServerState or None) of a live server."""
    return running


@pytest.fixture(scope="session")
def oai():
    """oai(url, key="none") -> the official OpenAI client on a genforge server (no retries)."""
    import openai

    return lambda url, key="none": openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def blocking(monkeypatch):
    """blocking(command, make_cfg) -> (base URL, thread, raised): a blocking server command (`genforge serve`'s
    or an application's) run in a thread as command(make_cfg(port)) on a free port, returned once /health
    answers; `raised` gets the exception the command ends with. The JSON logs stay off (pytest keeps its own)."""
    import httpx

    monkeypatch.setattr("genforge.serve.logs.setup_logging", lambda level: None)

    def answers(url: str) -> bool:
        try:
            return httpx.get(url, timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def start(command, make_cfg) -> tuple[str, threading.Thread, list[Exception]]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        raised: list[Exception] = []

        def main() -> None:
            try:
                command(make_cfg(port))
            except Exception as e:
                raised.append(e)

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while not answers(f"http://127.0.0.1:{port}/health"):
            assert thread.is_alive() and time.monotonic() < deadline, f"the server did not start: {raised}"
            time.sleep(0.05)
        return f"http://127.0.0.1:{port}", thread, raised

    return start


@pytest.fixture
def browser():
    """Headless Chromium driven by Selenium (Debian's chromium + chromium-driver); its profile and the
    singleton-socket folders it makes under TMPDIR live in a short-named folder of its own, removed after
    (a socket path may not exceed 107 bytes: under pytest-xdist's longer tmp_path Chromium exited at start)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path and shutil.which("chromium"), "apt-get install -y chromium chromium-driver (.ci/run does)"
    home = Path(tempfile.mkdtemp(prefix="gf-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={home / 'profile'}")
    service = Service(driver_path, env={**os.environ, "TMPDIR": str(home)})
    try:
        driver = webdriver.Chrome(service=service, options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)),
                                           None)
    assert found, "PostgreSQL is not installed: apt-get install -y postgresql (.ci/run does)"
    return Path(found).parent


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster on a free port (run as `nobody` when the tests run as root, since
    PostgreSQL refuses root), as a SQLAlchemy URL with the psycopg 3 driver; removed afterwards."""
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


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory, tokenizer, save_folder) -> Path:
    """A random tiny BERT (no dropout, so two forwards of one batch agree) on the tiny BPE."""
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256, type_vocab_size=1, pad_token_id=0,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return save_folder(BertForMaskedLM(cfg).eval(), tokenizer, tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="session")
def pack_shakespeare(tmp_path_factory, shared_data):
    """pack_shakespeare(n_bytes) -> a packed folder of the first `n_bytes` of tiny-shakespeare, made once per
    size by the real data chain (prepare -> 320-token BPE -> pack)."""
    from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig
    from genforge.data.pack import pack
    from genforge.data.prepare import prepare
    from genforge.data.tokenizer import train_tokenizer

    made: dict[int, Path] = {}

    def make(n_bytes: int) -> Path:
        if n_bytes not in made:
            root = tmp_path_factory.mktemp(f"packed{n_bytes}")
            text = (shared_data / "tinyshakespeare" / "input.txt").read_bytes()[:n_bytes]
            (root / "shakespeare.txt").write_bytes(text)
            data, tok = root / "data", root / "tok"
            prepare(PrepareConfig(inputs=[root / "shakespeare.txt"], out=data, val_fraction=0.1, workers=1))
            train_tokenizer(TokenizerConfig(data=data, out=tok, vocab_size=320))
            pack(PackConfig(data=data, tokenizer=tok, workers=1))
            made[n_bytes] = data
        return made[n_bytes]

    return make


@pytest.fixture(scope="session")
def repack(tmp_path_factory):
    """repack(data) -> a copy of the packed folder `data` packed by another BPE of the same size (trained on
    its text in capitals): check_vocab lets it through, but its token ids mean other text."""
    import json
    import shutil

    from genforge.data.config import PackConfig, PrepareConfig, TokenizerConfig
    from genforge.data.pack import pack
    from genforge.data.prepare import prepare
    from genforge.data.tokenizer import train_tokenizer

    def make(data: Path) -> Path:
        root = tmp_path_factory.mktemp("repacked")
        size = json.loads((data / "pack.json").read_text())["vocab_size"]
        text = "\n\n".join(json.loads(line)["text"] for line in (data / "train.jsonl").open(encoding="utf-8"))
        (root / "capitals.txt").write_text(text.upper(), encoding="utf-8")
        prepare(PrepareConfig(inputs=[root / "capitals.txt"], out=root / "capitals", val_fraction=0.1, workers=1))
        tok = train_tokenizer(TokenizerConfig(data=root / "capitals", out=root / "tok", vocab_size=size))
        shutil.copytree(data, root / "data")
        pack(PackConfig(data=root / "data", tokenizer=tok, workers=1))
        assert json.loads((root / "data" / "pack.json").read_text())["vocab_size"] == size
        return root / "data"

    return make


@pytest.fixture
def counted(monkeypatch):
    """counted(module, name): module.name wrapped to count its calls; set `.stop_at = n` on the returned counter
    to make call n raise KeyboardInterrupt (a Ctrl-C or kill with that call in flight)."""

    def wrap(module, name):
        class Counter:
            count, stop_at = 0, None

        real = getattr(module, name)

        def call(*args, **kwargs):
            Counter.count += 1
            if Counter.count == Counter.stop_at:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, call)
        return Counter

    return wrap
