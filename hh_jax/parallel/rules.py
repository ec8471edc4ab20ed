"""The one table from logical axis names to mesh axes.

Parameters are sharded FSDP-style over `fsdp` on their embed axis and tensor-parallel over
`tensor` on heads / kv_heads / mlp / vocab; activations keep their batch on (`data`, `fsdp`). Changing
the parallelism of a run is a change of `config.mesh`, never of this table.
"""
MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES = (
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),  # grouped-query key/value heads: n_kv_heads must divide by tensor
    ("kv", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("pos", None),
    # activations
    ("batch", BATCH_AXES),
    ("act_length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)
