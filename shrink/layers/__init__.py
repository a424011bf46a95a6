"""What shrink knows about layer families, one small file each: where a new architecture is taught.

rows (a unit's weights in Linear/conv/embedding layers, and the Hugging Face Conv1D pruner) ·
attention (blocks cut by whole heads: separate or fused q/k/v, grouped-query attention).

May import: _util/, errors. Used by cut/.
"""
