"""dqn: the seed's Deep Q-Network (000 §10) on gymnasium's CartPole-v1 (pure Python, offline).

The registered model is the Q-network: input "observation" (4,) = cart position, cart velocity, pole angle,
pole angular velocity -> 2 Q-values (push left, push right), an MLP Dense(64, relu)-Dense(64, relu)-Dense(2).
``train_fn`` runs DQN: epsilon-greedy exploration (1 -> 0.04 over 8k steps), an experience-replay buffer, a
target network, the Double-DQN target and a Huber loss. Hyper-parameters follow rl-baselines3-zoo's tuned
CartPole DQN: collect ``train_every``=256 env steps with the frozen network, snapshot it as the target network,
then run ``gradient_steps``=128 Adam updates (lr 2.3e-3, batch 64) in ONE compiled ``tf.function`` call. Acting
uses a numpy copy of the weights (no Keras call per env step). After each round the greedy policy plays
``val_episodes`` episodes on validation env seeds (20_000 + i, never the test seeds); the best weights are kept
and training stops once that validation mean reaches ``stop_return`` (475), usually after 7k-22k env steps
(~5-12 s on 2 cores; seeds 0-5 all scored 488-500 on the test episodes).

Metric: ``score_fn`` plays ``config["eval_episodes"]`` greedy episodes (env seeds 10_000 + i, at most
``max_episode_steps`` steps each, 500 = CartPole-v1's own limit) calling only ``predict`` and returns the mean
return; the bar is 195 (the classic "solved" threshold). The episodes run in lockstep, so ``predict`` gets a
batch (n_running, 4) per time step instead of one call per episode step (same actions, far fewer calls).
The data splits are observations collected by a uniformly random policy (real model inputs for latency, export
parity and int8 calibration); their ``y`` is None and the metric ignores them. Scoring a 500-step policy
makes 500 ``predict`` calls: ~1 s with a direct model call, but 15-70 s with ``model.predict`` (the default
Keras predict of ``models.training``).

Seed changes: the seed only describes DQN in prose (no code, no environment, no network size); the network,
environment and all hyper-parameters here are this module's choices.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from models.backend import keras, tf
from models.datasets import split_arrays
from models.registry import register
from models.spec import Metric, ModelSpec, Split, Splits

ENV_ID = "CartPole-v1"
TEST_SEED0 = 10_000  # env seeds of the scored episodes
VAL_SEED0 = 20_000  # env seeds of the evaluations during training

#: the metric's name and direction; the value itself comes from ``score`` (episodes played through predict)
MEAN_RETURN = Metric("mean_return", lambda y_true, y_pred: float(np.mean(y_pred)), higher_is_better=True)


def build(config: dict):
    h1, h2 = config["units"]
    return keras.Sequential([
        keras.layers.Input((4,), name="observation"),
        keras.layers.Dense(h1, activation="relu"),
        keras.layers.Dense(h2, activation="relu"),
        keras.layers.Dense(2),
    ], name="dqn")


def _make_env(max_steps: int | None = None):
    return gym.make(ENV_ID, max_episode_steps=max_steps) if max_steps else gym.make(ENV_ID)


def play(predict, seeds, max_steps: int = 500) -> np.ndarray:
    """Greedy returns of one episode per env seed, played in lockstep (one batched ``predict`` per time step)."""
    envs = [_make_env(max_steps) for _ in seeds]
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)]).astype("float32")
    returns = np.zeros(len(envs))
    running = list(range(len(envs)))
    while running:
        q = np.asarray(predict(obs[running].astype("float32")))
        actions = q.reshape(len(running), -1).argmax(-1)
        still = []
        for i, a in zip(running, actions):
            o, r, terminated, truncated, _ = envs[i].step(int(a))
            returns[i] += r
            obs[i] = o
            if not (terminated or truncated):
                still.append(i)
        running = still
    for env in envs:
        env.close()
    return returns


def score(predict, split, config: dict) -> float:
    seeds = [TEST_SEED0 + i for i in range(config["eval_episodes"])]
    return float(np.mean(play(predict, seeds, config["max_episode_steps"])))


def load_data(config: dict, seed: int) -> Splits:
    """Observations visited by a uniformly random policy (``data_steps`` of them), split 60/20/20."""
    rng = np.random.default_rng(seed)
    env = _make_env()
    obs, _ = env.reset(seed=seed)
    xs = []
    while len(xs) < config["data_steps"]:
        xs.append(obs)
        obs, _, terminated, truncated, _ = env.step(int(rng.integers(2)))
        if terminated or truncated:
            obs, _ = env.reset(seed=int(rng.integers(1 << 31)))
    env.close()
    x = np.asarray(xs, "float32")
    splits = split_arrays(x, np.zeros(len(x)), seed, stratify=False)
    return Splits(*(Split(s.x, None) for s in (splits.train, splits.val, splits.test)))


def _numpy_q(model):
    """A fast numpy forward pass of the current weights (for acting and validation inside training only)."""
    w = model.get_weights()

    def q(x):
        h = np.asarray(x, "float32")
        for i in range(0, len(w) - 2, 2):
            h = np.maximum(h @ w[i] + w[i + 1], 0.0)
        return h @ w[-2] + w[-1]

    return q


def train(model, splits, config: dict, seed: int):
    """DQN with replay, a target network and Double-DQN targets; keeps the best validated weights.

    Like stable-baselines3's tuned CartPole DQN, the agent collects ``train_every`` env steps with the current
    (frozen) network, then snapshots it as the target network and runs ``gradient_steps`` updates in one
    compiled call. After each such round the greedy policy is validated.
    """
    rng = np.random.default_rng(seed)
    gamma, batch, n_grad = config["gamma"], config["batch_size"], config["gradient_steps"]
    target = keras.models.clone_model(model)
    optimizer = keras.optimizers.Adam(config["lr"])
    huber = keras.losses.Huber()

    @tf.function
    def updates(s, a, r, s2, done):  # each (gradient_steps, batch, ...)
        for k in tf.range(n_grad):
            best_next = tf.argmax(model(s2[k], training=False), axis=-1)
            q_next = tf.gather(target(s2[k], training=False), best_next, batch_dims=1)
            y = r[k] + gamma * (1.0 - done[k]) * q_next
            with tf.GradientTape() as tape:
                q = tf.gather(model(s[k], training=True), a[k], batch_dims=1)
                loss = huber(y, q)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))

    size = config["buffer_size"]
    buf_s = np.zeros((size, 4), "float32")
    buf_s2 = np.zeros((size, 4), "float32")
    buf_a = np.zeros(size, "int32")
    buf_r = np.zeros(size, "float32")
    buf_d = np.zeros(size, "float32")

    env = _make_env()
    obs, _ = env.reset(seed=seed)
    q_fn = _numpy_q(model)
    best, best_weights = -np.inf, model.get_weights()
    val_seeds = [VAL_SEED0 + i for i in range(config["val_episodes"])]
    explore = config["eps_decay_steps"]
    for t in range(config["train_steps"]):
        eps = max(config["eps_end"], 1.0 - t / explore * (1.0 - config["eps_end"]))
        a = int(rng.integers(2)) if rng.random() < eps else int(q_fn(obs[None])[0].argmax())
        obs2, r, terminated, truncated, _ = env.step(a)
        i = t % size
        buf_s[i], buf_a[i], buf_r[i], buf_s2[i], buf_d[i] = obs, a, r, obs2, float(terminated)
        obs = obs2
        if terminated or truncated:
            obs, _ = env.reset()
        if t + 1 < config["learning_starts"] or (t + 1) % config["train_every"]:
            continue
        target.set_weights(model.get_weights())
        idx = rng.integers(0, min(t + 1, size), (n_grad, batch))
        updates(buf_s[idx], buf_a[idx], buf_r[idx], buf_s2[idx], buf_d[idx])
        q_fn = _numpy_q(model)
        value = float(np.mean(play(q_fn, val_seeds, config["max_episode_steps"])))
        if value >= best:
            best, best_weights = value, model.get_weights()
        if value >= config["stop_return"]:
            break
    env.close()
    model.set_weights(best_weights)
    return model


register(ModelSpec(
    name="dqn",
    seed_doc="000 §10 (DQN)",
    task="CartPole-v1 control: Q-network of a DQN agent (observation -> Q-values of 2 actions)",
    build=build,
    load_data=load_data,
    metric=MEAN_RETURN,
    quality_bar=195.0,
    config={"units": (64, 64), "data_steps": 2000, "train_steps": 60_000, "batch_size": 64, "lr": 2.3e-3,
            "gamma": 0.99, "buffer_size": 100_000, "learning_starts": 1000, "train_every": 256,
            "gradient_steps": 128, "eps_end": 0.04, "eps_decay_steps": 8000, "val_episodes": 10,
            "stop_return": 475.0, "eval_episodes": 20, "max_episode_steps": 500},
    tiny={"units": (8, 8), "data_steps": 200, "train_steps": 300, "learning_starts": 100, "train_every": 100,
          "gradient_steps": 8, "val_episodes": 2, "eval_episodes": 2, "max_episode_steps": 20},
    train_fn=train,
    score_fn=score,
    labels=("push_left", "push_right"),
    preprocessing="raw CartPole-v1 observation (4 floats); greedy action = argmax of the 2 Q-values",
    notes=__doc__,
))
