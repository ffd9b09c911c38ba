"""Prompt-to-prompt attention control (Hertz et al., 2022) as a diffusers attention processor.

A set is rendered as one group per candidate: its base prompt first, then the members, all from the same
initial noise. While a row is under control (the first ``p2p_fraction`` of the steps; ``p2p.control``
says which halves of the classifier-free guidance batch: ``both``, as SocialCounterfactuals' attention.py
and InstructPix2Pix's do, or ``conditional`` only, as google/prompt-to-prompt's ptp_utils does):

- self-attention: the row attends with its base row's attention map. The map is softmax(Q K^T), so the
  processor takes Q and K from the base row and V from the row itself; the layout of the image follows
  the base while the content can follow the member's prompt. This is what SocialCounterfactuals used.
- cross-attention (optional, prompt-to-prompt "refine", conditional rows only): for every token of the member prompt that is
  aligned with a token of the base prompt, the base row's map for that token replaces the row's own;
  the new attribute words keep their own maps.
"""

from __future__ import annotations

from difflib import SequenceMatcher

import torch
import torch.nn.functional as F


def token_map(base_ids: list[int], member_ids: list[int]) -> list[int]:
    """For each member token, the position of the same token in the base prompt's alignment, or -1."""
    out = [-1] * len(member_ids)
    for block in SequenceMatcher(None, base_ids, member_ids, autojunk=False).get_matching_blocks():
        for k in range(block.size):
            out[block.b + k] = block.a + k
    return out


class AttentionControl:
    """What the processor reads during one UNet call (set by the sampler before each step)."""

    def __init__(self):
        # (B,) long: the row whose Q and K each row's self-attention uses now (its base row while
        # injected, else itself); None when no row is injected this step
        self.self_source: torch.Tensor | None = None
        self.base_rows: torch.Tensor | None = None  # (B,) long: each row's base row
        self.token_map: torch.Tensor | None = None  # (B, T) long: base token per token, -1 when none
        self.cross_rows: torch.Tensor | None = None  # (B,) bool: rows whose cross-attention is refined now

    def off(self) -> None:
        self.self_source = self.base_rows = self.token_map = self.cross_rows = None


class PromptToPromptProcessor:
    """diffusers' ``AttnProcessor2_0`` (as in diffusers 0.42, ``models/attention_processor.py``) plus the
    injection above; with the control off it computes exactly the same."""

    def __init__(self, control: AttentionControl):
        self.control = control

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        batch_size, sequence_length, _ = hidden_states.shape if not is_cross else encoder_hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if not is_cross:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        control = self.control
        if is_cross and control.cross_rows is not None and attention_mask is None:
            hidden_states = self._refined_cross_attention(attn, query, key, value)
        else:
            if not is_cross and control.self_source is not None:
                query, key = query[control.self_source], key[control.self_source]
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    def _refined_cross_attention(self, attn, query, key, value):
        control = self.control
        probs = (query @ key.transpose(-1, -2) * attn.scale).softmax(dim=-1)  # B, heads, pixels, tokens
        base = probs[control.base_rows]
        index = control.token_map.clamp(min=0)[:, None, None, :].expand_as(base)
        from_base = base.gather(-1, index)
        use = (control.cross_rows[:, None] & (control.token_map >= 0))[:, None, None, :]
        return torch.where(use, from_base, probs) @ value
