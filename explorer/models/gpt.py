"""Small causal transformers (GPT, Radford et al. 2018/2019) for character-level language modelling.

Pre-norm blocks (x + attn(LN(x)), x + MLP(LN(x))), learnt token and positional embeddings, causal attention
computed explicitly -- softmax(QK^T / sqrt(d_head) + causal mask) -- so every block's probabilities pass through
an `nn.Identity` (`blocks.i.attn.probs`, (B, heads, T, T)) and its values through another (`blocks.i.attn.values`,
(B, heads, T, d_head)), as in the zoo's ViTs. The block outputs are the stages, token states (B, T, C) that the
taps return as (B, C, T, 1) maps, one row per token (models/sequence.py's rule for feature methods; no
kd_prefix_tokens: they are not laid out on an image grid). The embedding tap `pre_logits` is the
final-norm hidden state of every position, (B*T, C), the rows the logits (B*T, V) are computed from
(explorer/models/sequence.py: tokens are the samples). Every model has 4 heads, so MiniLM pairs any two.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cnn import set_taps
from .registry import register_model


class CausalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, context: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.probs = nn.Identity()    # tap: causal softmax attention (B, heads, T, T)
        self.values = nn.Identity()   # tap: values (B, heads, T, d_head)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).tril(), persistent=False)

    def forward(self, x, cache: dict | None = None):
        """cache (generation): the keys and values of the positions before x, extended in place."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        span = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.probs(scores.masked_fill(~self.mask[span - n:span, :span], float("-inf")).softmax(dim=-1))
        v = self.values(v)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, context: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalAttention(dim, heads, context)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))

    def forward(self, x, cache: dict | None = None):
        x = x + self.attn(self.norm1(x), cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """token + position embeddings -> causal blocks -> LN -> head: next-token logits at every position."""
    sequence = True

    def __init__(self, vocab: int, context: int, dim: int, depth: int, heads: int = 4, mlp_ratio: float = 4.0):
        super().__init__()
        self.vocab, self.context, self.dim = vocab, context, dim
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, context, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, context, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.pre_logits = nn.Identity()   # tap: the final-norm hidden state of every position (B*T, C)
        self.head = nn.Linear(dim, vocab)
        for m in self.modules():   # GPT-2's init: N(0, 0.02) weights, zero biases
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos_embed, std=0.02)
        names = [f"blocks.{i}" for i in range(depth)]
        set_taps(self, names, names, "pre_logits", "head")
        self.kd_attention = [f"blocks.{i}.attn.probs" for i in range(depth)]
        self.kd_values = [f"blocks.{i}.attn.values" for i in range(depth)]

    def next_token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) logits of the token after each position (T <= the context length)."""
        return self._logits(x)

    def _logits(self, x: torch.Tensor, caches: list | None = None, offset: int = 0) -> torch.Tensor:
        x = x.long().reshape(x.shape[0], -1)
        b, n = x.shape
        if offset + n > self.context:
            raise ValueError(f"{offset + n} tokens exceed the model's context of {self.context}")
        h = self.tok_embed(x) + self.pos_embed[:, offset:offset + n]
        for i, block in enumerate(self.blocks):
            h = block(h, None if caches is None else caches[i])
        return self.head(self.pre_logits(self.norm(h).reshape(b * n, self.dim))).reshape(b, n, self.vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.next_token_logits(x).reshape(-1, self.vocab)

    def _last_logits(self, out: torch.Tensor, caches: list | None) -> tuple[torch.Tensor, list | None]:
        """The float logits (B, V) of the token after `out`, and the caches to pass next time: keys and values are
        cached while the text fits the context (one position per step); past it, each step reads the last
        `context` tokens (a sliding window: positions shift, so nothing is cached)."""
        if out.shape[1] > self.context:
            return self._logits(out[:, -self.context:])[:, -1].float(), None
        if caches is None:
            caches = [{} for _ in self.blocks]
            return self._logits(out, caches)[:, -1].float(), caches
        return self._logits(out[:, -1:], caches, out.shape[1] - 1)[:, -1].float(), caches

    @torch.no_grad()
    def generate(self, prompt_ids: torch.Tensor, n: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None, mix_in: "GPT | None" = None,
                 mix_in_alpha: float = 0.0) -> torch.Tensor:
        """(B, T0) prompts -> (B, T0 + n): n tokens appended one at a time, each sampled from softmax(z / temperature)
        (temperature 0: the argmax, greedy), reading at most the last `context` tokens.

        mix_in: another GPT on the same vocabulary (a teacher); each token is then drawn from the mixture
        (1 - mix_in_alpha) softmax(z / T) + mix_in_alpha softmax(z_mix / T) -- MiniLLM's teacher-mixed sampling
        (their patched transformers' generate(mix_in_model=, mix_in_alpha=), explorer/schemes/minillm.py)."""
        if mix_in is not None and not (temperature > 0 and 0.0 <= mix_in_alpha <= 1.0):
            raise ValueError(f"mixed sampling needs temperature > 0 and mix_in_alpha in [0, 1], got "
                             f"{temperature} and {mix_in_alpha}")
        models = [self] + ([mix_in] if mix_in is not None else [])
        was = [m.training for m in models]
        for m in models:
            m.eval()
        out = prompt_ids.long().reshape(prompt_ids.shape[0], -1)
        caches = [None] * len(models)
        for _ in range(n):
            z, caches[0] = self._last_logits(out, caches[0])
            if temperature <= 0:
                nxt = z.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(z / temperature, dim=-1)
                if mix_in is not None:
                    z_mix, caches[1] = mix_in._last_logits(out, caches[1])
                    probs = (1 - mix_in_alpha) * probs + mix_in_alpha * F.softmax(z_mix / temperature, dim=-1)
                nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(out.device)
            out = torch.cat([out, nxt], dim=1)
        for m, mode in zip(models, was):
            m.train(mode)
        return out


# name: (width, depth, description); 4 heads each
_GPT_CONFIGS = {
    "gpt_1x32": (32, 1, "causal transformer, 1 block x 32 wide, 4 heads (student)"),
    "gpt_2x64": (64, 2, "causal transformer, 2 blocks x 64 wide, 4 heads (student)"),
    "gpt_4x128": (128, 4, "causal transformer, 4 blocks x 128 wide, 4 heads (teacher)"),
}


def _make_gpt_builder(dim, depth):
    def builder(num_classes: int = 96, in_channels: int = 1, image_size: int = 64) -> nn.Module:
        # text datasets pass their vocabulary as num_classes and their context length as image_size (sequence.py)
        return GPT(num_classes, image_size, dim, depth)
    return builder


for _name, (_dim, _depth, _desc) in _GPT_CONFIGS.items():
    register_model(_name, family="gpt", description=_desc)(_make_gpt_builder(_dim, _depth))
