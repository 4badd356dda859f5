"""Gradient-norm penalty of IGNITE, computed per ensemble member (pure torch).

IGNITE (Dao, Nguyen, Truong, Hoang, "Incorporating Surrogate Gradient Norm to Improve
Offline Optimization Techniques", NeurIPS 2024, Section 3) trains a surrogate
under a bound on its sharpness. With ``h(ω)`` the mean surrogate prediction over a batch,
sharpness is bounded by ``ρ·||∇_ω h(ω)||`` (the L2 norm over ALL trainable parameters
together) and the surrogate solves

    min_ω L_D(ω)   s.t.   ρ·||∇_ω h(ω)|| <= ε,

through the Lagrangian ``L(ω, λ) = L_D(ω) + λ(ρ·||∇_ω h(ω)|| − ε)`` and the basic
differential multiplier method (BDMM), both steps once per minibatch:

    ω <- ω − η_ω (∇_ω L_D(ω) + λ·ρ·∇_ω ||∇_ω h(ω)||)     (descent, the surrogate's optimizer)
    λ <- λ + η_λ (ρ·||∇_ω h(ω)|| − ε)                    (ascent, norm taken before the ω step)

Everything here works per ensemble member: every parameter tensor has the member dimension
``M`` first (as in :class:`lightning_mbo.nn.StackedMLP`), ``h`` has shape ``(M,)`` with
``h[m]`` member m's mean prediction, and member m's norm ``||∇h_m||`` is the L2 norm over
the slices ``[m]`` of all parameters together. Members are independent, so the gradient of
``Σ_m h_m`` restricted to slice ``[m]`` is exactly ``∇h_m``; each member has its own ``λ_m``.

The gradient of the norm, ``∇_ω ||∇_ω h|| = H ∇h / ||∇h||`` (``H`` the Hessian of ``h``),
has two implementations:

* exact: :func:`norm_penalty_term`, one backward of ``Σ_m scale_m <∇h_m, u_m>`` with
  ``u = ∇h/||∇h||`` held fixed, taken together with the data loss's backward (its gradient is
  ``scale_m H_m u_m``, the double-backward result, without a second backward pass);
* :func:`norm_gradient_finite_difference`: what the authors ran. With
  ``u = ∇h/||∇h||``, ``H u ≈ (∇h(ω + r·u) − ∇h(ω)) / r`` (error ``O(r)``); the parameter
  shift is undone afterwards, bit for bit.

Members whose input is an embedding: the released TensorFlow code receives the embedding
table's gradient as ``IndexedSlices`` (one row per lookup, repeated ids NOT summed), so its
``tf.linalg.global_norm`` is ``sqrt(Σ_lookups ||∂h/∂e_l||² + Σ_other ||∇h||²)`` with ``e_l`` the
looked-up vectors, while its shift ``ω + r·∇h/norm`` uses the dense gradient (duplicates
summed). Both modes take a ``norm_fn`` for that: the norm of ``u`` and of the constraint is
``norm_fn``'s, the direction is the dense gradient (:func:`lookup_sq_norms`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "constraint_violation",
    "norm_penalty_term",
    "grad_h",
    "lookup_sq_norms",
    "member_norms",
    "member_views",
    "norm_gradient_finite_difference",
]

#: Averages a list of per-parameter tensors over data-parallel ranks (``None``: one process).
Reduce = Callable[[list[Tensor]], list[Tensor]]
#: Per-member norms ``(M,)`` of a (reduced) per-parameter gradient list (``None``: :func:`member_norms`).
NormFn = Callable[[list[Tensor]], Tensor]


def _members_of(tensors: Sequence[Tensor]) -> int:
    """Return the common leading (member) dimension ``M`` of ``tensors``."""
    if len(tensors) == 0:
        raise ValueError("expected at least one tensor")
    sizes = {t.shape[0] if t.dim() > 0 else None for t in tensors}
    if len(sizes) != 1 or None in sizes:
        shapes = [tuple(t.shape) for t in tensors]
        raise ValueError(f"every tensor must have the same leading member dimension M, got shapes {shapes}")
    return next(iter(sizes))


def _per_member(v: Tensor, like: Tensor) -> Tensor:
    """View the ``(M,)`` vector ``v`` as ``(M, 1, ..., 1)`` to broadcast against ``like``."""
    return v.reshape(v.shape[0], *([1] * (like.dim() - 1)))


def member_views(v: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """The ``(M,)`` vector ``v`` viewed to broadcast against each tensor of ``like`` (its dtype)."""
    by_dim: dict[tuple[int, torch.dtype], Tensor] = {}
    for t in like:
        key = (t.dim(), t.dtype)
        if key not in by_dim:
            by_dim[key] = _per_member(v.to(t.dtype), t)
    return [by_dim[(t.dim(), t.dtype)] for t in like]


def _check_h(h: Tensor, params: Sequence[Tensor]) -> None:
    members = _members_of(params)
    if h.dim() != 1 or h.shape[0] != members:
        raise ValueError(
            f"h must have shape (M,) = ({members},) matching the parameters, got {tuple(h.shape)}"
        )


def _inverse_norms(norms: Tensor) -> Tensor:
    """``1/||∇h_m||`` per member, 0 where the norm is 0 (no NaN, nothing to normalise)."""
    positive = norms > 0
    return torch.where(positive, 1.0 / torch.where(positive, norms, torch.ones_like(norms)), 0.0)


def member_norms(grads: Sequence[Tensor], extra_sq: Tensor | None = None) -> Tensor:
    """Per-member L2 norm over all parameter slices together.

    ``norms[m] = sqrt(Σ_k ||grads[k][m]||² + extra_sq[m])``, the norm ``||∇_ω h_m||`` of IGNITE
    when ``grads`` is the output of :func:`grad_h`. Taken per tensor (one norm per member and
    tensor, then the norm of those norms), without concatenating the gradients.

    The square root is guarded: a member whose squared norm is exactly 0 gets norm 0 and a
    zero (not NaN) derivative, so the result is safe to differentiate through (double backward).

    Args:
        grads: tensors of shapes ``(M, ...)``, all with the same leading ``M``.
        extra_sq: ``(M,)`` squared norms to add (e.g. :func:`lookup_sq_norms`); ``None``: none.

    Returns:
        ``(M,)`` norms, in the dtype of the tensors.
    """
    grads = list(grads)
    members = _members_of(grads) if grads else (None if extra_sq is None else extra_sq.shape[0])
    if members is None:
        raise ValueError("expected at least one tensor")
    parts = [torch.linalg.vector_norm(g.reshape(members, -1), dim=1).square() for g in grads]
    if extra_sq is not None:
        parts.append(extra_sq)
    sq = torch.stack(parts).sum(0)
    positive = sq > 0
    safe_sq = torch.where(positive, sq, torch.ones_like(sq))
    return torch.where(positive, safe_sq.sqrt(), torch.zeros_like(sq))


def lookup_sq_norms(lookup_grads: Sequence[Tensor], members: int) -> Tensor:
    """``Σ_lookups ||∂h_m/∂e_l||²`` per member: the released code's share of an embedding in ``||∇h||``.

    ``tf.linalg.global_norm`` of an ``IndexedSlices`` gradient sums the squares of its rows, one
    row per lookup: the gradients with respect to the looked-up vectors ``e_l`` (the embedding
    layer's output), before the rows of a repeated id are summed into the dense table gradient.

    Args:
        lookup_grads: gradients with respect to looked-up vectors, shapes ``(M, ...)``.
        members: ``M``.

    Returns:
        ``(M,)`` summed squares (zeros for an empty list).
    """
    sq = [torch.linalg.vector_norm(g.reshape(members, -1), dim=1).square() for g in lookup_grads]
    return torch.stack(sq).sum(0) if sq else torch.zeros(members)


def grad_h(
    h: Tensor, params: Sequence[Tensor], create_graph: bool = False, retain_graph: bool | None = None
) -> list[Tensor]:
    """Gradient ``∇_ω Σ_m h_m`` with respect to ``params``.

    Because members are independent, slice ``[m]`` of each returned tensor is member m's own
    gradient ``∇_{ω_m} h_m``. Parameters ``h`` does not depend on get zeros. Gradients are
    returned (``torch.autograd.grad``), never accumulated into ``.grad``.

    Args:
        h: ``(M,)`` per-member mean predictions, built from ``params``.
        params: tensors of shapes ``(M, ...)``.
        create_graph: keep the graph of the gradient so it can be differentiated again
            (needed by the exact mode, :func:`norm_penalty_term`).
        retain_graph: keep the forward graph (to backpropagate a loss from the same forward later).

    Returns:
        One tensor per parameter, same shapes as ``params``.
    """
    params = list(params)
    _check_h(h, params)
    if not h.requires_grad:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(
        h.sum(), params, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def norm_penalty_term(grads: Sequence[Tensor], scale: Tensor, reduce: Reduce | None = None,
                      norm_fn: NormFn | None = None) -> tuple[Tensor, Tensor]:
    """A scalar whose gradient is ``Σ_m scale_m ∇_ω ||∇h_m||``, for ONE backward with the data loss.

    With ``g`` the (reduced) gradient held fixed and ``u_m = g_m/||g_m||``, the term is
    ``Σ_m scale_m <∇h_m(ω), u_m>``; its gradient is ``scale_m H_m u_m = scale_m ∇||∇h_m||``.
    Under DDP each rank differentiates its own ``<∇h_local, u>`` and the gradient average across
    ranks makes it the global ``H u``.

    Args:
        grads: ``∇h`` per parameter, built with ``create_graph=True`` (see :func:`grad_h`).
        scale: ``(M,)`` weights, e.g. ``λ_m ρ``.
        reduce: data-parallel average of the gradients (``None``: one process).
        norm_fn: the norm ``||g_m||`` of ``u_m = g_m/||g_m||`` and of the result (``None``:
            :func:`member_norms`; the released embedding norm: see the module docstring). With
            another norm the term's gradient is ``scale_m H_m g_m / norm_fn(g)_m``, the ``r -> 0``
            limit of :func:`norm_gradient_finite_difference` with the same ``norm_fn``.

    Returns:
        ``(term, norms)``: the scalar and the ``(M,)`` norms ``||∇h_m||`` of the (global) gradient.
    """
    g = [t.detach() for t in grads]
    if reduce is not None:
        g = reduce(g)
    norms = (norm_fn or member_norms)(g)
    inv = _inverse_norms(norms)
    dots = sum((t * gi).reshape(len(norms), -1).sum(1) for t, gi in zip(grads, g, strict=True))
    return (scale.to(norms) * inv * dots).sum(), norms


def norm_gradient_finite_difference(
    h_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    r: float = 0.05,
    grads: list[Tensor] | None = None,
    reduce: Reduce | None = None,
    norm_fn: NormFn | None = None,
    workspace: list[Tensor] | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """Finite-difference ``∇_ω ||∇_ω h||`` per member, as in the authors' released code.

    With ``g = ∇h(ω)`` and ``u_m = g_m / ||g_m||`` per member::

        ∇_{ω_m} ||∇h_m|| = H_m u_m ≈ (∇h_m(ω + r·u) − ∇h_m(ω)) / r        (error O(r))

    The shifted point is evaluated by pointing each parameter's ``.data`` at ``ω + r·u`` (written
    into ``workspace``, no copy of ``ω``), recomputing the gradient by calling ``h_fn`` again,
    and pointing ``.data`` back at the untouched original storage (even if ``h_fn`` raises): the
    restore is bit for bit and costs nothing. An autograd graph built from ``params`` before this
    call (e.g. the data loss) can still be backpropagated after it. Members with
    ``||∇h_m|| = 0`` are not shifted and get a zero estimate.

    Args:
        h_fn: re-runs the forward on the SAME batch and returns ``(M,)`` per-member mean
            predictions; it must be deterministic (no fresh dropout masks or noise).
        params: tensors of shapes ``(M, ...)`` that ``h_fn`` reads (leaf parameters).
        r: step size of the difference (the released code: ``r = 0.05``).
        grads: ``∇h`` at the current point if already available (skips one forward and
            backward); computed from ``h_fn()`` otherwise.
        reduce: data-parallel average applied to every ``∇h`` (both points), so that the norm,
            the shift and the estimate are those of the global batch, identical on every rank.
        norm_fn: the norm that divides the (dense) shift and is returned (``None``:
            :func:`member_norms`); the released embedding norm makes ``u = g/norm_fn(g)``.
        workspace: tensors shaped like ``params`` that hold the shifted point, kept by the caller
            between steps (a fresh parameter-sized allocation costs page faults on every step);
            ``None``: allocated here.

    Returns:
        ``(norms, estimate)``: ``(M,)`` norms ``||∇h_m||`` at the unshifted point and one
        tensor per parameter, same shapes as ``params``.
    """
    if r <= 0:
        raise ValueError(f"r must be > 0, got {r}")
    params = list(params)
    if grads is None:
        grads = grad_h(h_fn(), params)
        if reduce is not None:
            grads = reduce(grads)
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    grads = [g.detach() for g in grads]
    norms = (norm_fn or member_norms)(grads)
    # Per-member factors, broadcast to every parameter: the shift r/||g_m|| (0 where ||g_m|| = 0,
    # so those members stay put) and 1/r where the member moved (its estimate), 0 elsewhere.
    shift = member_views(_inverse_norms(norms) * r, grads)
    inv_r = member_views((norms > 0).to(norms.dtype) / r, grads)

    # Multi-tensor (foreach) ops: a few kernels for the whole parameter list, not a few per tensor.
    with torch.no_grad():
        original = [p.data for p in params]
        if workspace is None:
            moved = torch._foreach_addcmul(original, grads, shift)
        else:
            if [w.shape for w in workspace] != [d.shape for d in original]:
                raise ValueError("workspace must hold one tensor shaped like each parameter")
            moved = [torch.addcmul(d, g, s, out=w) for d, g, s, w in zip(original, grads, shift, workspace,
                                                                          strict=True)]
    try:
        for p, d in zip(params, moved, strict=True):
            p.data = d
        shifted = grad_h(h_fn(), params)
        if reduce is not None:
            shifted = reduce(shifted)
    finally:
        for p, d in zip(params, original, strict=True):
            p.data = d
    del moved

    estimate = list(shifted)  # fresh tensors: the difference is taken in place
    torch._foreach_sub_(estimate, grads)
    torch._foreach_mul_(estimate, inv_r)
    return norms, estimate


def constraint_violation(norms: Tensor, rho: float, eps: float) -> Tensor:
    """Constraint value ``ρ·||∇h|| − ε`` (positive when violated).

    Args:
        norms: ``(M,)`` gradient norms ``||∇h_m||``.
        rho: perturbation radius ``ρ`` (the released code: 0.05).
        eps: sharpness budget ``ε`` (the released code: 0.1).

    Returns:
        ``(M,)`` violations.
    """
    return rho * norms - eps
