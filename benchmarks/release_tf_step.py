"""The released TensorFlow ensemble training step, timed: what ``step_vs_flops.py --release-python`` compares with.

Runs under an interpreter with TensorFlow (``pip install tensorflow-cpu``; this file imports
neither torch nor the package). It rebuilds, in TensorFlow, the training step that IGNITE's
release runs for gradient ascent and its ensembles (cuong-dm/IGNITE, ``design_baselines/
gradient_ascent/trainers.py`` and ``gradient_ascent_IGNITE/trainers.py``, ``MaximumLikelihood``;
model: ``gradient_ascent/nets.py``, ``ForwardModel``), as the release runs it:

* one Keras ``Sequential`` per member: Dense(2048), LeakyReLU, Dense(2048), LeakyReLU, Dense(2),
  the Gaussian head's mean and log-std, the log-std softly clamped between two trainable bounds
  (initially log 0.2 and log 0.1); Keras' Adam at lr 1e-3;
* the members train one after another (the release trains member i for all its epochs, then
  member i + 1), so a batch of the five-member ensemble costs five member steps;
* plain step (``tf.function``): inputs plus ``noise_std`` x Gaussian noise, the Gaussian negative
  log-likelihood weighted by the bootstrap counts and divided by their sum, the Spearman
  correlation of the batch logged, one tape, ``apply_gradients``;
* IGNITE step (finite difference, IGNITE paper Sec. 3, Algorithm 1): the same loss gradient; a
  second forward and tape for ∇h, h = sum of the predicted means over the batch / batch size;
  its global norm; every variable shifted by r·∇h/‖∇h‖ (``assign_add``), a third forward and tape
  for ∇h at the shifted weights, the shift undone (``assign_sub``); the loss gradient plus
  λρ/r·(∇h(ω + r·u) − ∇h(ω)); ``apply_gradients``; λ ← λ + η_λ(ρ‖∇h‖ − ε).

The data are random of TFBind8's shapes (24 logit inputs, batch 128): the arithmetic is the
same as on the real rows. Times are process seconds with one intra-op and one inter-op thread,
the two modes interleaved; the script prints one JSON line (medians per five-member batch).

    python benchmarks/release_tf_step.py --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.get_logger().setLevel("ERROR")  # one trace per member is expected: each member has its own step


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[2048, 2048])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--inputs", type=int, default=24, help="TFBind8's logits: 8 positions x 3")
    p.add_argument("--steps", type=int, default=20, help="timed five-member batches per mode")
    p.add_argument("--warmup", type=int, default=3)
    return p.parse_args()


class Member(tf.Module):
    """One member of the released ensemble: an MLP with a softly clamped Gaussian head."""

    def __init__(self, inputs: int, hidden: list[int]) -> None:
        super().__init__()
        layers = [tf.keras.Input(shape=(inputs,))]
        for width in hidden:
            layers += [tf.keras.layers.Dense(width), tf.keras.layers.LeakyReLU(0.3)]
        layers.append(tf.keras.layers.Dense(2))
        self.net = tf.keras.Sequential(layers)
        self.max_logstd = tf.Variable(tf.fill([1, 1], np.log(0.2).astype(np.float32)))
        self.min_logstd = tf.Variable(tf.fill([1, 1], np.log(0.1).astype(np.float32)))
        self.optim = tf.keras.optimizers.Adam(learning_rate=1e-3)
        self.lam = tf.Variable(1e-3)

    @property
    def weights(self) -> list[tf.Variable]:
        return list(self.net.trainable_variables) + [self.max_logstd, self.min_logstd]

    def params(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mean, logstd = tf.split(self.net(x, training=True), 2, axis=-1)
        logstd = self.max_logstd - tf.nn.softplus(self.max_logstd - logstd)
        logstd = self.min_logstd + tf.nn.softplus(logstd - self.min_logstd)
        return mean, logstd

    def loss(self, x: tf.Tensor, y: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        x0 = x + 0.0 * tf.random.normal(tf.shape(x))  # the release's input noise (std 0 on TFBind8)
        mean, logstd = self.params(x0)
        nll = 0.5 * tf.square((y - mean) / tf.exp(logstd)) + logstd + 0.5 * np.log(2 * np.pi)
        _ = spearman(y[:, 0], mean[:, 0])  # the release logs it every step
        return tf.math.divide_no_nan(tf.reduce_sum(b * nll), tf.reduce_sum(b))

    @tf.function(reduce_retracing=True)
    def plain_step(self, x: tf.Tensor, y: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self.loss(x, y, b)
        self.optim.apply_gradients(zip(tape.gradient(loss, self.weights), self.weights, strict=True))
        return loss

    def grad_h(self, x: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:  # trainable variables are watched without asking
            h = tf.reduce_sum(self.params(x)[0]) / tf.cast(tf.shape(x)[0], tf.float32)
        return tape.gradient(h, self.weights)

    @tf.function(reduce_retracing=True)
    def ignite_step(self, x: tf.Tensor, y: tf.Tensor, b: tf.Tensor, rho: float = 0.05, r: float = 0.05,
                    eta: float = 1e-3, eps: float = 0.1) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = self.loss(x, y, b)
        grads = tape.gradient(loss, self.weights)
        gh = self.grad_h(x)
        norm = tf.linalg.global_norm(gh)
        shifted = [(w, g) for w, g in zip(self.weights, gh, strict=True) if g is not None]  # the log-std bounds: no ∇h
        for w, g in shifted:
            w.assign_add(r * g / norm)
        gh_shift = self.grad_h(x)
        for w, g in shifted:
            w.assign_sub(r * g / norm)
        grads = [g if h is None else g + self.lam * rho / r * (s - h)
                 for g, s, h in zip(grads, gh_shift, gh, strict=True)]
        self.optim.apply_gradients(zip(grads, self.weights, strict=True))
        self.lam.assign_add(eta * (rho * norm - eps))
        return loss


def spearman(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    ra = tf.cast(tf.argsort(tf.argsort(a)), tf.float32)
    rb = tf.cast(tf.argsort(tf.argsort(b)), tf.float32)
    ra, rb = ra - tf.reduce_mean(ra), rb - tf.reduce_mean(rb)
    return tf.reduce_sum(ra * rb) / tf.sqrt(tf.reduce_sum(ra * ra) * tf.reduce_sum(rb * rb))


def main() -> None:
    args = parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(0)
    rng = np.random.default_rng(0)
    batches = [(tf.constant(rng.normal(size=(args.batch_size, args.inputs)), tf.float32),
                tf.constant(rng.normal(size=(args.batch_size, 1)), tf.float32),
                tf.constant(rng.integers(0, 3, size=(args.batch_size, 1)), tf.float32)) for _ in range(4)]
    modes = {"plain": [Member(args.inputs, args.hidden) for _ in range(args.members)],
             "fd": [Member(args.inputs, args.hidden) for _ in range(args.members)]}

    def run(mode: str, batch: tuple) -> float:
        t = time.process_time()
        for member in modes[mode]:
            step = member.plain_step if mode == "plain" else member.ignite_step
            step(*batch).numpy()
        return time.process_time() - t

    load_start = os.getloadavg()
    for i in range(args.warmup):
        for mode in modes:
            run(mode, batches[i % len(batches)])
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(args.steps):
        for mode in (list(modes) if i % 2 == 0 else list(modes)[::-1]):
            times[mode].append(run(mode, batches[i % len(batches)]))
    print(json.dumps({"times": {m: statistics.median(v) for m, v in times.items()}, "tensorflow": tf.__version__,
                      "matmul_gflops": matmul_rate(args), "load_start": load_start, "load_end": os.getloadavg()}))


def matmul_rate(args: argparse.Namespace, reps: int = 10) -> float:
    """GFLOP/s of TensorFlow's bare (batch, hidden) x (hidden, hidden) product here: the release's own rate."""
    a = tf.random.normal((args.batch_size, args.hidden[-1]))
    w = tf.random.normal((args.hidden[-1], args.hidden[-1]))
    product = tf.function(lambda a, w: tf.linalg.matmul(a, w))
    product(a, w).numpy()
    times = []
    for _ in range(reps):
        t = time.process_time()
        product(a, w).numpy()
        times.append(time.process_time() - t)
    return 2 * args.batch_size * args.hidden[-1] ** 2 / statistics.median(times) / 1e9


if __name__ == "__main__":
    main()
