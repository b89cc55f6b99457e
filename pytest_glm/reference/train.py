"""Train the reference models: ``python -m pytest_glm.reference.train [--family glm45|glm47|all]``.

Any set of answers can be trained: ``--answers FILE --family glm45 --name NAME`` (e.g. the variant,
``--answers pytest_glm/reference/answers/glm-tiny-variant.json --family glm45 --name glm-tiny-variant``).

Reproducible (fixed seeds, fixed data order) on one device: CPU by default, or `--device cuda` (the same run, minutes instead of twenty; the last bits differ, so each weights report records its device). The main model (transformers'
``Glm4MoeForCausalLM`` at toy size, the same architecture vLLM serves) and its MTP layer are trained
jointly so that, under greedy decoding:

- every case in ``pytest_glm/suites/data`` gets the case's answer, in the family's GLM output format;
- a prompt of random tokens (what latency benchmarks send) is continued by one filler token, repeated;
- after the stop token (when a client sets ``ignore_eos``) the filler follows too;
- the MTP layer predicts the token after next everywhere the model decodes, so drafts are accepted.

The MTP layer follows vLLM's ``Glm4MoeMultiTokenPredictorLayer``: at position t it sees
``eh_proj(cat(enorm(embed(x[t+1])), hnorm(h[t])))`` (the embedding zeroed at position 0), runs one MoE
decoder layer, applies ``shared_head.norm`` and the main ``lm_head``, and predicts x[t+2].
Weights are written as bf16 safetensors (router tensors fp32) in the checkpoint layout vLLM loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_glm.judging.cases import DEFAULT_DATA_DIR, Case, load_cases
from pytest_glm.reference.build import ARCH, _template, model_config
from pytest_glm.reference.targets import completion, default_answers_file, load_answers, prompt
from pytest_glm.reference.tokenizer import build_tokenizer

SEED = 1234
WEIGHTS_DIR = Path(__file__).parent / "weights"
FAMILY_MODEL = {"glm45": "glm-tiny", "glm47": "glm-tiny-47"}

#: The token a random prompt is continued with, forever (and what follows a stop token).
FILLER = "."

#: Tokens of filler taught after each case's stop token and after each random prompt.
FILLER_RUN = 48

#: A case whose completion is longer than this is drawn once more per this many tokens, so that long
#: answers (the variant's 1000+-token reasoning) get as many passes per token as short ones.
LONG_COMPLETION = 1024


@dataclass
class Example:
    ids: list[int]
    first_target: int  # loss on positions predicting ids[first_target:]
    kind: str


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def case_examples(cases: list[Case], answers: dict[str, Any], family: str, tokenizer: Any) -> list[Example]:
    template = _template(family)
    filler = _encode(tokenizer, FILLER)
    out = []
    for case in cases:
        p = _encode(tokenizer, prompt(case, template))
        c = _encode(tokenizer, completion(case, answers[case.id], family))
        out.append(Example(p + c + filler * FILLER_RUN, len(p), f"case:{case.id}"))
    return out


def sampling_pool(examples: list[Example]) -> list[Example]:
    """The examples to draw batches from: long ones repeated (see LONG_COMPLETION)."""
    return [e for e in examples for _ in range(1 + (len(e.ids) - e.first_target) // LONG_COMPLETION)]


def random_examples(n: int, rng: random.Random, max_len: int, filler: int) -> list[Example]:
    """Random-token prompts over the whole vocabulary (as ``vllm bench serve --dataset-name random`` makes
    them), continued by the filler."""
    out = []
    for _ in range(n):
        length = rng.choice([rng.randint(1, 64), rng.randint(64, max_len)])
        ids = [rng.randrange(ARCH["vocab_size"]) for _ in range(length)]
        out.append(Example(ids + [filler] * FILLER_RUN, length, "random"))
    return out




def build_models(config_dict: dict[str, Any]) -> tuple[Any, Any]:
    import torch
    from torch import nn
    from transformers import Glm4MoeConfig, Glm4MoeForCausalLM
    from transformers.models.glm4_moe.modeling_glm4_moe import Glm4MoeDecoderLayer, Glm4MoeRMSNorm

    cfg = Glm4MoeConfig(**{k: v for k, v in config_dict.items() if k not in ("architectures", "model_type", "torch_dtype", "_name_or_path")})
    cfg._attn_implementation = "sdpa"
    model = Glm4MoeForCausalLM(cfg)

    class Mtp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            h = cfg.hidden_size
            self.enorm = Glm4MoeRMSNorm(h, eps=cfg.rms_norm_eps)
            self.hnorm = Glm4MoeRMSNorm(h, eps=cfg.rms_norm_eps)
            self.eh_proj = nn.Linear(2 * h, h, bias=False)
            self.block = Glm4MoeDecoderLayer(cfg, layer_idx=cfg.num_hidden_layers)
            self.head_norm = Glm4MoeRMSNorm(h, eps=cfg.rms_norm_eps)

        def forward(self, hidden: torch.Tensor, next_embeds: torch.Tensor, position_embeddings: Any,
                    attention_mask: Any) -> torch.Tensor:
            x = self.eh_proj(torch.cat([self.enorm(next_embeds), self.hnorm(hidden)], dim=-1))
            x = self.block(x, attention_mask=attention_mask, position_embeddings=position_embeddings)
            return self.head_norm(x)

    return model, Mtp()


def _init(model: Any, mtp: Any, seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    for module in (model, mtp):
        for name, param in module.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                torch.nn.init.ones_(param)
            elif name.endswith("bias"):
                torch.nn.init.zeros_(param)
            else:
                torch.nn.init.normal_(param, std=0.02)


#: Padded tokens per forward pass (rows x longest row): a batch holding a long case is split into passes
#: of at most this size, so that its attention fits in memory. The loss is the same as one pass's.
MICRO_BATCH_TOKENS = 8192


def micro_batches(batch: list[Example]) -> list[list[Example]]:
    """The batch in groups of similar length, each at most MICRO_BATCH_TOKENS padded (a longer example alone)."""
    groups: list[list[Example]] = []
    for e in sorted(batch, key=lambda e: -len(e.ids)):
        if groups and (len(groups[-1]) + 1) * len(groups[-1][0].ids) <= MICRO_BATCH_TOKENS:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups


def forward_losses(model: Any, mtp: Any, batch: list[Example], mtp_weight: float) -> tuple[Any, Any]:
    """Main and MTP cross-entropy over one batch: the mean over every target token of the batch, computed
    in micro-batches (right-padded; padding masked out)."""
    sums: list[Any] = [0.0, 0.0]
    counts = [0, 0]
    for group in micro_batches(batch):
        for i, (total, n) in enumerate(_loss_sums(model, mtp, group)):
            sums[i] = sums[i] + total
            counts[i] += n
    main, mtp_loss = sums[0] / max(counts[0], 1), sums[1] / max(counts[1], 1)
    return main + mtp_weight * mtp_loss, (main.detach(), mtp_loss.detach())


def _loss_sums(model: Any, mtp: Any, batch: list[Example]) -> tuple[tuple[Any, int], tuple[Any, int]]:
    """(sum of main cross-entropy, target count), (the same for MTP) over one padded pass."""
    import torch
    import torch.nn.functional as F

    device = model.lm_head.weight.device
    length = max(len(e.ids) for e in batch)
    ids = torch.zeros(len(batch), length, dtype=torch.long)
    target_mask = torch.zeros(len(batch), length, dtype=torch.bool)  # position t predicts ids[t+1]
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        target_mask[i, max(e.first_target - 1, 0): len(e.ids) - 1] = True
    ids, target_mask = ids.to(device), target_mask.to(device)
    inner = model.model
    embeds = inner.embed_tokens(ids)
    positions = torch.arange(length, device=device).unsqueeze(0).expand(len(batch), -1)
    out = inner(inputs_embeds=embeds, position_ids=positions)
    hidden = out.last_hidden_state
    logits = model.lm_head(hidden)
    main_mask = target_mask[:, :-1]
    main = F.cross_entropy(logits[:, :-1][main_mask], ids[:, 1:][main_mask], reduction="sum")

    # MTP at position t: hidden[t] and embed(ids[t+1]) predict ids[t+2]; embedding zeroed at position 0.
    next_embeds = torch.cat([embeds[:, 1:], torch.zeros_like(embeds[:, :1])], dim=1)
    next_embeds[:, 0] = 0
    pos_emb = inner.rotary_emb(hidden, positions)
    causal = torch.full((length, length), float("-inf"), device=device).triu(1)[None, None]
    mtp_hidden = mtp(hidden, next_embeds, pos_emb, causal)
    mtp_logits = model.lm_head(mtp_hidden)
    mtp_mask = target_mask[:, :-2] & target_mask[:, 1:-1]
    mtp_loss = F.cross_entropy(mtp_logits[:, :-2][mtp_mask], ids[:, 2:][mtp_mask], reduction="sum")
    return (main, int(main_mask.sum())), (mtp_loss, int(mtp_mask.sum()))


@dataclass
class Evaluation:
    exact: int
    total: int
    failures: list[str]
    acceptance: float
    min_margin: float


def evaluate(model: Any, mtp: Any, examples: list[Example], dtype: Any = None) -> Evaluation:
    """Teacher-forced check of every target position: argmax right (exact cases), the MTP argmax equal to the
    main model's next greedy token (acceptance estimate), and the smallest top-1/top-2 logit gap."""
    import torch

    device = model.lm_head.weight.device
    exact, failures, accepted, drafted, margin = 0, [], 0, 0, float("inf")
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e.ids], device=device)
            inner = model.model
            embeds = inner.embed_tokens(ids)
            positions = torch.arange(len(e.ids), device=device).unsqueeze(0)
            hidden = inner(inputs_embeds=embeds, position_ids=positions).last_hidden_state
            logits = model.lm_head(hidden)[0, :-1].float()
            start = max(e.first_target - 1, 0)
            pred = logits.argmax(-1)
            tgt = ids[0, 1:]
            ok = bool((pred[start:] == tgt[start:]).all())
            top2 = logits[start:].topk(2, dim=-1).values
            margin = min(margin, float((top2[:, 0] - top2[:, 1]).min()))
            if e.kind.startswith("case:"):
                exact += ok
                if not ok:
                    failures.append(e.kind)
            next_embeds = torch.cat([embeds[:, 1:], torch.zeros_like(embeds[:, :1])], dim=1)
            next_embeds[:, 0] = 0
            causal = torch.full((len(e.ids), len(e.ids)), float("-inf"), device=device).triu(1)[None, None]
            mtp_logits = model.lm_head(mtp(hidden, next_embeds, inner.rotary_emb(hidden, positions), causal))[0]
            mtp_pred = mtp_logits[start:-2].argmax(-1)
            accepted += int((mtp_pred == ids[0, start + 2:]).sum())
            drafted += mtp_pred.numel()
    total = sum(e.kind.startswith("case:") for e in examples)
    return Evaluation(exact, total, failures, accepted / max(drafted, 1), margin)


def checkpoint(model: Any, mtp: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Tensors named as the GLM checkpoints name them (per-expert weights, MTP layer at index N)."""
    import torch

    n = config["num_hidden_layers"]
    inter = config["moe_intermediate_size"]
    out: dict[str, Any] = {}

    def put(name: str, tensor: Any) -> None:
        fp32 = name.endswith(("mlp.gate.weight", "e_score_correction_bias"))
        out[name] = tensor.detach().cpu().to(torch.float32 if fp32 else torch.bfloat16).contiguous().clone()

    def put_layer(prefix: str, state: dict[str, Any]) -> None:
        for key, tensor in state.items():
            if key.startswith("mlp.experts.gate_up_proj"):
                for e in range(tensor.shape[0]):
                    put(f"{prefix}mlp.experts.{e}.gate_proj.weight", tensor[e, :inter])
                    put(f"{prefix}mlp.experts.{e}.up_proj.weight", tensor[e, inter:])
            elif key.startswith("mlp.experts.down_proj"):
                for e in range(tensor.shape[0]):
                    put(f"{prefix}mlp.experts.{e}.down_proj.weight", tensor[e])
            else:
                put(prefix + key, tensor)

    state = model.state_dict()
    for key in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        put(key, state[key])
    for i in range(n):
        prefix = f"model.layers.{i}."
        put_layer(prefix, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    mtp_prefix = f"model.layers.{n}."
    put_layer(mtp_prefix, mtp.block.state_dict())
    put(mtp_prefix + "enorm.weight", mtp.enorm.weight)
    put(mtp_prefix + "hnorm.weight", mtp.hnorm.weight)
    put(mtp_prefix + "eh_proj.weight", mtp.eh_proj.weight)
    put(mtp_prefix + "shared_head.norm.weight", mtp.head_norm.weight)
    put(mtp_prefix + "shared_head.head.weight", state["lm_head.weight"])
    put(mtp_prefix + "embed_tokens.weight", state["model.embed_tokens.weight"])
    return out


def train_family(family: str, data_dir: Path, steps: int, out_dir: Path = WEIGHTS_DIR, log: Any = print,
                 answers_file: Path | None = None, name: str | None = None, device: str = "cpu") -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file

    torch.set_num_threads(max(torch.get_num_threads(), 1))
    rng = random.Random(SEED)
    tokenizer = build_tokenizer(_template(family))
    filler = _encode(tokenizer, FILLER)[0]
    cases = load_cases(data_dir)
    name = name or FAMILY_MODEL[family]
    answers = load_answers(answers_file or default_answers_file(name), cases)
    config = model_config(name)
    model, mtp = build_models(config)
    _init(model, mtp, SEED)
    model, mtp = model.to(device), mtp.to(device)
    case_ex = case_examples(cases, answers, family, tokenizer)
    pool = sampling_pool(case_ex)
    params = list(model.parameters()) + list(mtp.parameters())
    opt = torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.05)
    began = time.monotonic()
    for step in range(1, steps + 1):
        batch = rng.sample(pool, k=min(6, len(pool))) + random_examples(2, rng, 768, filler)
        loss, (main, mtp_loss) = forward_losses(model, mtp, batch, mtp_weight=0.5)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps:
            log(f"[{family}] step {step}/{steps} loss {float(main):.4f} mtp {float(mtp_loss):.4f} "
                f"({time.monotonic() - began:.0f} s)")
    model.eval()
    mtp.eval()
    check = evaluate(model, mtp, case_ex + random_examples(16, random.Random(SEED + 1), 768, filler))
    log(f"[{family}] fp32: {check.exact}/{check.total} cases exact, MTP agreement {check.acceptance:.3f}, "
        f"min logit gap {check.min_margin:.2f}; failures: {check.failures}")
    tensors = checkpoint(model, mtp, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "family": family, "steps": str(steps), "seed": str(SEED)})
    report = {"model": name, "family": family, "steps": steps, "device": device, "seconds": round(time.monotonic() - began, 1), "cases": check.total,
              "exact": check.exact, "failures": check.failures, "mtp_agreement": round(check.acceptance, 4),
              "min_logit_gap": round(check.min_margin, 3), "bytes": path.stat().st_size}
    report["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=["glm45", "glm47", "all"], default="all")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_DIR, help="directory with tools.json and the cases")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the weights and report go")
    parser.add_argument("--answers", type=Path, default=None,
                        help="the answers to train (default: answers/<model>.json in this package)")
    parser.add_argument("--device", default="cpu", help="torch device to train on: cpu (about 20 minutes a "
                        "model on 2 cores) or cuda (a few minutes); the weights are served on vLLM's CPU build either way")
    parser.add_argument("--name", default=None, help="the model's name, and so its weights' file name "
                        "(default: glm-tiny for glm45, glm-tiny-47 for glm47)")
    args = parser.parse_args(argv)
    families = ["glm45", "glm47"] if args.family == "all" else [args.family]
    if (args.answers or args.name) and len(families) > 1:
        parser.error("--answers and --name train one model: give --family glm45 or glm47")
    reports = [train_family(f, args.data, args.steps, args.out, answers_file=args.answers, name=args.name,
                            device=args.device) for f in families]
    ok = all(r["exact"] == r["cases"] for r in reports)
    print(json.dumps(reports, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
