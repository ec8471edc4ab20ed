"""Device mesh from `config.mesh`, and the shardings every step uses.

`config.mesh` names the size of each axis (`data`, `fsdp`, `tensor`); one axis may be -1
to take the devices left over. The mesh must use every device, so a mesh that does not
divide the device count is a one-line error before anything compiles.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import flax.linen as nn
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from hh_jax.errors import UserError
from hh_jax.parallel.rules import BATCH_AXES, LOGICAL_AXIS_RULES, MESH_AXES


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolves -1 and checks that the mesh covers exactly `num_devices` devices."""
  shape = [int(mesh_cfg.get(a, 1)) for a in MESH_AXES]
  wild = [i for i, s in enumerate(shape) if s == -1]
  if len(wild) > 1 or any(s == 0 or s < -1 for s in shape):
    raise UserError(f"config.mesh={dict(zip(MESH_AXES, shape))}: use positive sizes, "
                    "at most one of them -1")
  known = math.prod(s for s in shape if s != -1)
  if wild:
    if num_devices % known:
      raise UserError(f"config.mesh={dict(zip(MESH_AXES, shape))} does not divide the "
                      f"{num_devices} devices; make the fixed axes multiply to a divisor of {num_devices}")
    shape[wild[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise UserError(f"config.mesh={dict(zip(MESH_AXES, shape))} uses {math.prod(shape)} devices "
                    f"but {num_devices} are present; set the axes so they multiply to {num_devices}")
  return tuple(shape)


def make_mesh(mesh_cfg, devices=None) -> jax.sharding.Mesh:
  devices = devices if devices is not None else jax.devices()
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def one_device_mesh() -> jax.sharding.Mesh:
  """The trivial mesh over the first device: the default for scoring and sampling."""
  return jax.make_mesh((1, 1, 1), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=jax.devices()[:1])


def batch_size_divisor(mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh, ndim: int = 2) -> NamedSharding:
  """Leading axis over (data, fsdp); the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def logical_shardings(abstract_tree, mesh):
  """NamedShardings for a tree whose leaves are (possibly) nn.Partitioned boxes."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)


@contextmanager
def activate(mesh):
  """Mesh and logical rules in scope, so in-model sharding constraints resolve."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_AXIS_RULES):
    yield
