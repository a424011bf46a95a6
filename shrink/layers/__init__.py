"""What shrink knows about layer families, one small file each: where a new architecture is taught.

rows (a unit's weights in Linear/conv/embedding layers, the Hugging Face Conv1D pruner) ·
attention (blocks cut by whole heads: separate or fused q/k/v, grouped-query attention) ·
tied_attention (timm, nanoGPT, Swin: heads x head_dim is the input width; head dims are cut) ·
recurrent (LSTM/GRU/RNN hidden units across gates, directions and layers) · vit (torchvision's
stored ``hidden_dim``) · positional (position tables held as buffers) · padding (zero-padded
channel shortcuts, kept whole) · shuffle (channel shuffle, kept whole) · constants (widths fixed by
a constant tensor or a number in a view, kept whole) · glu (gated widths: MambaOut's stored split
sizes, gMLP's token projection) · split_order (split parts mapped in their order; channel splits
below a class token) · selective_kernel (SKNet's paths and split attention) · subsample_attention
(Twins' separate q and kv reshaped to its input width, head dims cut by tied_attention) · eva (EVA's
rotary attention with q/v biases: whole heads, forward reshaped with -1) · csp (CSPNet's expanded
width split in equal halves by a stored size) · std_conv (weight-standardised convolutions of BiT
and NFNet: per-filter gains cut with the rows, cut fan-ins checked for shape).

registry.py lists the families and their hooks; the engine (cut/) asks the registry, never a
family by name.

May import: _util/, errors. Used by cut/.
"""
