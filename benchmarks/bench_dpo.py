"""Preference tuning: DPO of the Bitext support chat model against hard negatives, vs the SFT model it starts from.

The chat model is bench_sft.py's chain (`small` decoder pretrained on the Bitext conversations, then SFT;
`--chat DIR` reuses one). Preference pairs, split like bench_sft (sha256(instruction) buckets 0-7 train,
9 held out): the customer's question, the agent reply of its own intent (chosen) and the reply to a
question of another intent of the same category (rejected: `cancel_order` vs `change_order`, the
confusions a support model actually makes). `genforge finetune dpo` trains on the training pairs.
Baseline = the SFT model, in the same run. Printed for both on held-out questions:
- pair accuracy: share of held-out pairs whose chosen reply the model gives the higher log-probability;
- intent accuracy of greedy replies: a reply's intent is that of its nearest training reply (TF-IDF
  cosine), compared with the question's intent.

    .venv/bin/python benchmarks/bench_dpo.py                                # ~25 minutes on 2 cores
    .venv/bin/python benchmarks/bench_dpo.py --chat runs/chat --dpo-minutes 4
    .venv/bin/python benchmarks/bench_dpo.py --quick                        # smoke
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_sft import BITEXT, SYSTEM  # noqa: E402

from genforge.finetune.data import hash_bucket  # noqa: E402


def rows() -> list[dict[str, str]]:
    with open(BITEXT, encoding="utf-8", newline="") as f:
        return [{k: r[k].strip() for k in ("instruction", "intent", "category", "response")}
                for r in csv.DictReader(f)]


def hard_pairs(part: list[dict[str, str]], seed: int) -> list[dict]:
    """(question, own reply, a reply of another intent of the same category) for every row that has one."""
    rng = random.Random(seed)
    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in part:
        by_category[r["category"]].append(r)
    pairs = []
    for r in part:
        others = [o for o in by_category[r["category"]] if o["intent"] != r["intent"]]
        if others:
            prompt = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["instruction"]}]
            pairs.append({"prompt": prompt, "chosen": r["response"], "rejected": rng.choice(others)["response"],
                          "intent": r["intent"]})
    return pairs


def pair_accuracy(model_dir: Path, pairs: list[dict], seq_len: int) -> float:
    """Share of pairs whose chosen reply has the higher log-probability under the model."""
    import torch

    from genforge.finetune.dpo import encode_pairs, make_collate, read_pairs, sequence_logps
    from genforge.finetune.model import load_tokenizer
    from genforge.finetune.sft import load_causal_lm

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
        tokenizer = load_tokenizer(model_dir)
        examples = encode_pairs(tokenizer, read_pairs(path), seq_len)
    lm = load_causal_lm(model_dir).eval()
    collate = make_collate(examples, torch.zeros(len(examples), 2), tokenizer.pad_token_id)
    wins = 0
    with torch.no_grad():
        for first in range(0, len(examples), 16):
            batch = collate(list(range(first, min(first + 16, len(examples)))))
            chosen, rejected = sequence_logps(lm, batch["input_ids"], batch["attention_mask"],
                                              batch["labels"]).chunk(2)
            wins += int((chosen > rejected).sum())
    return wins / len(examples)


def intent_accuracy(model_dir: Path, test: list[dict], train: list[dict], max_new_tokens: int) -> float:
    """Greedy replies to the held-out questions, labelled by their nearest training reply (TF-IDF)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from genforge.generate import generate

    prompts = [json.dumps([{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["instruction"]}])
               for r in test]
    replies = generate(model_dir, prompts, chat=True, max_new_tokens=max_new_tokens, temperature=0)
    tfidf = TfidfVectorizer(sublinear_tf=True).fit([r["response"] for r in train])
    nearest = (tfidf.transform(replies) @ tfidf.transform([r["response"] for r in train]).T).toarray().argmax(1)
    return sum(train[j]["intent"] == r["intent"] for j, r in zip(nearest, test, strict=True)) / len(test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chat", type=Path, help="an SFT chat model to start from (default: bench_sft's chain)")
    ap.add_argument("--pretrain-minutes", type=float, default=5.0)
    ap.add_argument("--sft-minutes", type=float, default=4.0)
    ap.add_argument("--dpo-minutes", type=float, default=6.0)
    ap.add_argument("--pairs", type=int, default=2000, help="training pairs (a seeded sample)")
    ap.add_argument("--test", type=int, default=200, help="held-out questions scored")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--sft-weight", type=float, default=0.0, help="RPO: weight of the chosen answers' NLL")
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--quick", action="store_true", help="smoke: 0.3-minute stages, 200 pairs, 20 questions")
    ap.add_argument("--work", type=Path, default=None, help="keep data and runs here (default: temp)")
    args = ap.parse_args()
    if args.quick:
        args.pretrain_minutes = args.sft_minutes = args.dpo_minutes = 0.3
        args.pairs, args.test = 200, 20
    from genforge.finetune.config import DpoConfig
    from genforge.finetune.dpo import dpo

    data = rows()
    train = [r for r in data if hash_bucket(r["instruction"]) < 8]
    test = [r for r in data if hash_bucket(r["instruction"]) == 9][:args.test]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        chat = args.chat or sft_chain(work, args)
        candidates = hard_pairs(train, seed=0)
        pairs = random.Random(0).sample(candidates, min(args.pairs, len(candidates)))
        val = hard_pairs([r for r in data if hash_bucket(r["instruction"]) == 8], seed=1)[:200]
        for name, part in (("pairs.jsonl", pairs), ("val_pairs.jsonl", val)):
            (work / name).write_text("".join(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected")}) + "\n"
                                             for p in part), encoding="utf-8")
        tuned = dpo(DpoConfig(model=chat, data=work / "pairs.jsonl", val_data=work / "val_pairs.jsonl",
                              out=work / "dpo", seq_len=args.seq_len, batch_size=8, lr=args.lr, beta=args.beta,
                              sft_weight=args.sft_weight,
                              warmup_steps=10, max_steps=10**9, max_minutes=args.dpo_minutes, eval_every=50,
                              eval_batches=8, log_every=10))
        metrics = json.loads((tuned / "manifest.json").read_text())["metrics"]
        test_pairs = hard_pairs(test, seed=2)
        results = {name: (pair_accuracy(folder, test_pairs, args.seq_len), intent_accuracy(folder, test, train, 96))
                   for name, folder in (("SFT (baseline)", chat), ("SFT + DPO", tuned))}
    print(f"\nBitext hard-negative preferences: {len(pairs)} training pairs, {len(test_pairs)} held-out pairs, "
          f"{len(test)} held-out questions")
    print(f"DPO, {args.dpo_minutes:g} min: {metrics['steps']} steps, beta {args.beta}, sft weight {args.sft_weight}, "
          f"lr {args.lr}; validation "
          f"loss {metrics['val_loss_before']:.3f} -> {metrics['val_loss']:.3f}, reward accuracy "
          f"{metrics['val_reward_accuracy']:.3f}")
    print(f"{'model':<16}{'pair accuracy':>15}{'intent accuracy':>17}")
    for name, (pair_acc, intent_acc) in results.items():
        print(f"{name:<16}{pair_acc:>15.3f}{intent_acc:>17.3f}")
    (base_pairs, base_intent), (dpo_pairs, dpo_intent) = results.values()
    print(f"DPO vs SFT: pair accuracy {100 * (dpo_pairs - base_pairs):+.1f} points, intent accuracy "
          f"{100 * (dpo_intent - base_intent):+.1f} points")


def sft_chain(work: Path, args: argparse.Namespace) -> Path:
    """bench_sft's chain: data, tokenizer, pretrain `small`, SFT; the chat model's folder."""
    import subprocess

    subprocess.run([sys.executable, str(Path(__file__).with_name("bench_sft.py")), "--work", str(work / "sft"),
                    "--pretrain-minutes", str(args.pretrain_minutes), "--sft-minutes", str(args.sft_minutes),
                    "--seq-len", str(args.seq_len)], check=True)
    return work / "sft" / "chat"


if __name__ == "__main__":
    main()
