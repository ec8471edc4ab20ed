"""The policy and reward the RL tests (PPO, online) start from, trained once per module.

A plain module, not conftest: two conftest.py files (tests/ and tests/data/) both import
as `conftest`, so `import conftest` picks whichever pytest loaded first.
"""


def train_lm_and_pm(root, max_len: int | None = None):
  """A `test`-rung LM (runlocal) and a PM trained from it, under `root`: the policy and reward
  the RL tests (PPO, online, preemption) start from. max_len: both models' context, when the
  rung's default is too short (the HHH prompt of distillation needs 256). Returns
  {"lm": dir, "pm": dir}."""
  from configs import lm as lm_config, pm as pm_config  # pylint: disable=g-import-not-at-top
  from hh_jax import stages  # pylint: disable=g-import-not-at-top
  dirs = {k: str(root / k) for k in ("lm", "pm")}
  c = lm_config.get_config("size=test,runlocal=True")
  if max_len:
    c.model.max_len = max_len
  stages.run(c, dirs["lm"])
  c = pm_config.get_config("size=test,runlocal=True")
  c.init.workdir = dirs["lm"]
  if max_len:
    c.model.max_len = max_len
  c.data.seq_len = 96  # PPO's prompt budget: 96 - 8 new tokens
  stages.run(c, dirs["pm"])
  return dirs


def informative_samples(monkeypatch):
  """The test rung's LM writes gibberish, which the gold labeler scores 0 throughout: every
  pair would be a gold tie, dropped, and the loop would collect nothing. So each sampled
  response gets 0-3 of its request's detail words (how many: a hash of the sampled text),
  which the gold labeler tells apart; the loop, its sampler and its labels are the real ones."""
  import zlib  # pylint: disable=g-import-not-at-top
  from hh_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from hh_jax.rl import online  # pylint: disable=g-import-not-at-top
  real = online.Policies.respond

  def respond(self, workdir, contexts, key, k=1, with_stopped=False):
    got = real(self, workdir, contexts, key, k, with_stopped=with_stopped)
    texts, stops = got if with_stopped else (got, None)
    out = []
    for ctx, rs in zip(contexts, texts):
      topic = synthetic.parse_request(ctx).topic
      details = synthetic.TOPIC_BY_NAME[topic].details if topic else ()
      out.append([r + "".join(f" {d}." for d in details[:zlib.crc32(r.encode()) % 4])
                  for r in rs])
    return (out, stops) if with_stopped else out

  monkeypatch.setattr(online.Policies, "respond", respond)
