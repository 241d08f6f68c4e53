"""Classifying one program: compile it (dpc.api.compile_with_program), check that `dpc check` agrees and
that every error is located (judge_error), import, construct and run the module in float64 (and float32),
and compare it with dpc.reference (forward, the trace, forward(steps=s), the objective) -> a Result whose
outcome is one of dpc.fuzz.outcome.OUTCOMES. classify never raises."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
import os
import tempfile
import traceback

from dpc.errors import read_source
from dpc.fuzz.judge import judge_error
from dpc.fuzz.outcome import Result, exc_line, one_line
from dpc.fuzz.pool import phase

FILE = "fuzz.dp"
BATCH = 3
MAX_STEPS = 4
RTOL = 1e-9
SOLVE_ROUNDING = 2.0 ** -52  # the relative perturbation of each CG step's A p in _rounding_in_solves (float64 eps)
SOLVE_MARGIN = 10  # ... and how many times the reference's own spread under it the module may be off
RBF_RTOL = 1e-5  # a program with learned RBF functions: the module's local sum against the reference's full sum
MAX_DIM = 512            # a literal dim above this is too large to run
MAX_ELEMENTS = 10 ** 6   # ... and so is a declaration with more entries


def default_compile(text, file, overrides):
    """dpc.api.compile_with_program: what compile_source does for a user, with the compiled Program
    -> (the Program, the module's source)."""
    from dpc.api import compile_with_program
    return compile_with_program(text, file, overrides)  # a Compiled: (program, source)


def default_check(path, overrides=None, command="check"):
    from dpc.cli import main
    out, err = io.StringIO(), io.StringIO()
    argv = [command, path] + [a for k, v in (overrides or {}).items() for a in ("--set", f"{k}={v}")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def default_explain(path, overrides=None):
    return default_check(path, overrides, command="explain")


def default_reference():
    import dpc.reference
    return dpc.reference


@dataclasses.dataclass
class Hooks:
    """What classify calls; tests replace these to exercise the classifier itself."""

    compile: object = default_compile          # (text, file, overrides) -> (Program, module source)
    check: object = default_check              # (path, overrides) -> (rc, stdout, stderr)
    explain: object = default_explain          # the same for `dpc explain`
    reference: object = default_reference      # () -> a module like dpc.reference: evaluate(),
    #                                              evaluate_objective() and ReferenceError


DEFAULT_HOOKS = Hooks()


def _is_dpc_error(e) -> bool:
    from dpc.errors import DpcError
    return isinstance(e, DpcError)


def _sizes(program, rng) -> dict[str, int]:
    names = [d for d in program.dims if not d.isdigit()]
    pool = list(range(2, 8))
    rng.shuffle(pool)
    sizes = {}
    for i, d in enumerate(names):
        sizes[d] = pool[i % len(pool)] if rng.random() > 0.08 else 1
    return sizes


def _resolve(shape, sizes):
    return tuple(int(s) if s.isdigit() else sizes[s] for s in shape)


def _too_large(program) -> str | None:
    import sympy as sp
    for d in program.decls:
        lits = [int(s) for s in d.shape if s.isdigit()]
        if any(v > MAX_DIM for v in lits) or math.prod(lits or [1]) > MAX_ELEMENTS:
            return f"{d.kind} {d.name} : R[{', '.join(d.shape)}]"
    exprs = [d.value for d in program.decls if d.value is not None]
    if program.step is not None:
        exprs += [e for _, e in program.step.equations()]
    exprs += [e for _, e in program.closed_form]
    if program.objective is not None:
        exprs.append(program.objective)
    for e in exprs:
        for ident in getattr(e, "atoms", lambda *a: ())(sp.Identity):
            if ident.rows.is_Integer and int(ident.rows) > MAX_DIM:
                return f"eye({ident.rows})"
    return None


def _param_value(shape, rng):
    import numpy as np
    if len(shape) == 0:
        return np.array(rng.uniform(0.5, 1.5))
    if len(shape) == 1:
        return rng.standard_normal(shape)
    a = rng.standard_normal(shape) / math.sqrt(max(shape[0], 1))
    norms = np.linalg.norm(a, axis=0, keepdims=True)
    return a / np.where(norms > 0, norms, 1)


def _constant_scale(program) -> float:
    """The largest finite magnitude among the numbers written in the program (1 when all are small)."""
    import sympy as sp
    exprs = [d.value for d in program.decls if d.value is not None]
    if program.step is not None:
        exprs += [e for _, e in program.step.equations()]
    exprs += [e for _, e in program.closed_form]
    biggest = 1.0
    for e in exprs:
        for n in getattr(e, "atoms", lambda *a: ())(sp.Number):
            try:
                v = abs(float(n))
            except (TypeError, ValueError, OverflowError):
                continue
            if math.isfinite(v) and v > 1:
                biggest = max(biggest, v)
    return biggest if biggest > 1e6 else 1e-3  # only huge constants widen the tolerance


def _refuses(e: BaseException, source: str) -> bool:
    """A ValueError from a `raise ValueError(...)` of the generated module itself: its constructor
    checking what a derivation assumes of the values (a finite Lipschitz bound, positive steps)."""
    if type(e) is not ValueError:
        return False
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    if tb.tb_frame.f_code.co_filename != "<dpc:fuzz>":
        return False
    lines = source.split("\n")
    return 0 < tb.tb_lineno <= len(lines) and lines[tb.tb_lineno - 1].strip().startswith("raise ValueError")


def _raised_in(e: BaseException) -> str:
    """The name of the function whose frame raised e."""
    tb = e.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_name


def load_class(source: str):
    namespace = {"__name__": "dpc_fuzz_generated"}
    exec(compile(source, "<dpc:fuzz>", "exec"), namespace)
    import torch
    classes = [v for v in namespace.values() if isinstance(v, type) and issubclass(v, torch.nn.Module)
               and v.__module__ == "dpc_fuzz_generated"]
    if len(classes) != 1:
        raise ImportError(f"the module defines {len(classes)} network classes, not 1")
    return classes[0]


def _as_array(value):
    import numpy as np
    import torch
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, torch.nn.ParameterList):  # per-layer copies: stacked, layer k at [k]
        return np.stack([p.detach().cpu().numpy() for p in value])
    return np.asarray(value, dtype=float)


def compare(got, want, what: str, floor: float = 1e-3, rtol: float = RTOL) -> str | None:
    """None when equal within rtol (RTOL) of the output's scale, at least `floor` (non-finite entries must agree)."""
    import numpy as np
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return f"{what}: shape {got.shape}, reference {want.shape}"
    fin = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), fin) or not np.array_equal(got[~fin], want[~fin], equal_nan=True):
        bad = np.argwhere(np.isfinite(got) != fin)
        where = tuple(bad[0]) if len(bad) else tuple(np.argwhere(~fin)[0])
        return f"{what}: non-finite entries differ, at {where}: {got[where]!r} vs reference {want[where]!r}"
    if not fin.any():
        return None
    scale = float(np.abs(want[fin]).max())
    err = np.where(fin, np.abs(got - want), 0.0)
    worst = float(err.max())
    if worst <= rtol * max(scale, floor):
        return None
    where = np.unravel_index(int(err.argmax()), err.shape)
    return (f"{what}: max |module - reference| = {worst:.3g} (scale {scale:.3g}) at {tuple(int(i) for i in where)}: "
            f"{got[where]!r} vs {want[where]!r}")


def _check_agreement(path, overrides, compiled_error, hooks) -> Result | None:
    """`dpc check FILE` must accept exactly what compile accepts, and report the same first error."""
    try:
        rc, _, err = hooks.check(path, overrides)
    except Exception as e:  # noqa: BLE001
        return Result("check_disagrees", f"dpc check raised {exc_line(e)}", traceback.format_exc())
    if rc not in (0, 1):
        return Result("check_disagrees", f"dpc check exited {rc}: {one_line(err)}", err)
    if compiled_error is None and rc != 0:
        return Result("check_disagrees", f"compile accepts, dpc check rejects: {one_line(err)}", err)
    if compiled_error is not None and rc == 0:
        return Result("check_disagrees", f"compile rejects, dpc check accepts: "
                      f"{one_line(compiled_error.format().split(chr(10))[0])}", compiled_error.format())
    if compiled_error is not None:
        want = compiled_error.format().split("\n")[0]
        got = err.split("\n")[0]
        if got != want:
            return Result("check_disagrees", f"dpc check says {one_line(got)!r}, compile says {one_line(want)!r}",
                          f"dpc check:\n{err}\ncompile:\n{compiled_error.format()}")
    return None


def classify(text: str, seed: int = 0, overrides: dict | None = None, hooks: Hooks = DEFAULT_HOOKS,
             workdir: str | None = None) -> Result:
    """Compile, run and compare one program; never raises."""
    try:
        return _classify(text, seed, overrides, hooks, workdir)
    except RecursionError as e:
        return Result("crash", exc_line(e), "RecursionError outside the compiler's own calls")
    except Exception as e:  # noqa: BLE001 - a bug of the fuzzer itself
        return Result("crash", f"fuzzer: {exc_line(e)}", traceback.format_exc())


def _classify(text, seed, overrides, hooks, workdir) -> Result:
    import numpy as np
    import torch
    workdir = workdir or tempfile.mkdtemp(prefix="dpcfuzz")
    path = FILE if workdir == "." else os.path.join(workdir, FILE)
    file = path
    # --- compile ---
    phase("compile")
    program = source = compiled_error = None
    try:
        program, source = hooks.compile(text, file, overrides)
    except RecursionError as e:
        return Result("crash", exc_line(e), traceback.format_exc(limit=-8))
    except Exception as e:  # noqa: BLE001
        if not _is_dpc_error(e):
            return Result("crash", exc_line(e), traceback.format_exc())
        compiled_error = e
    # --- dpc check on the same text, read from a file as the CLI reads it ---
    phase("check")
    disagreement = None
    try:
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        try:
            as_read = read_source(path)  # the text as the CLI reads the file
        except Exception:  # noqa: BLE001 - not UTF-8 once written: check says so, compile never sees it
            as_read = None
        if as_read == text:
            disagreement = _check_agreement(path, overrides, compiled_error, hooks)
        elif as_read is not None:  # (a BOM dropped, say): compare with compile on what the CLI reads
            try:
                hooks.compile(as_read, file, overrides)
                error2 = None
            except Exception as e:  # noqa: BLE001
                error2 = e if _is_dpc_error(e) else None
            disagreement = _check_agreement(path, overrides, error2, hooks)
    except UnicodeEncodeError:
        pass
    # dpc explain (a third of the programs: it costs half a compile more): any verdict, no internal error
    if disagreement is None and os.path.exists(path) and seed % 3 == 0:
        phase("explain")
        try:
            rc, _, err = hooks.explain(path, overrides)
        except Exception as e:  # noqa: BLE001
            rc, err = 2, exc_line(e)
        if rc not in (0, 1):
            return Result("crash", f"dpc explain: {one_line(err)}", err)
    if compiled_error is not None:
        outcome, why = judge_error(compiled_error, text, file)
        if outcome == "bad_error":
            return Result(outcome, why, compiled_error.format())
        return disagreement or Result("rejected", why, compiled_error.format())
    if disagreement is not None:
        return disagreement
    # --- too large to run? ---
    large = _too_large(program)
    if large:
        return Result("too_large", large)
    # --- import, construct, run ---
    phase("run")
    torch.set_default_dtype(torch.float64)
    rng = np.random.default_rng(seed)
    try:
        cls = load_class(source)
    except Exception as e:  # noqa: BLE001
        return Result("import_fail", exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    sizes = _sizes(program, rng)
    params = {d.name: _param_value(_resolve(d.shape, sizes), rng) for d in program.of_kind("param")}
    # a filter initialisation (param K = dct | random): half the time the module builds it; the reference then
    # builds dct itself (dims=) and takes random filters from the module (it cannot draw torch's numbers)
    built = [d.name for d in program.of_kind("param") if getattr(d, "init", "") and rng.random() < 0.5]
    for name in built:
        del params[name]
    steps = min(program.layers, MAX_STEPS) if program.layers else None
    kwargs = {}
    try:
        signature = inspect.signature(cls.__init__)
    except (TypeError, ValueError) as e:
        return Result("construct_fail", exc_line(e), source)
    for name, par in signature.parameters.items():
        if name == "self" or par.kind in (par.VAR_POSITIONAL, par.VAR_KEYWORD):
            continue
        if name in params:
            kwargs[name] = torch.tensor(params[name])
        elif name == "steps" and steps is not None:
            kwargs[name] = steps
        elif name in sizes:
            kwargs[name] = sizes[name]
    # half the time the hypers are given, not defaulted: the same value of the same sign, scaled by [0.5, 2]
    # (a default baked into the code instead of read from the constructor shows up as a mismatch)
    hypers = {}
    if rng.random() < 0.5:
        for d in program.of_kind("hyper"):
            if d.name in signature.parameters and d.value is not None and d.value.is_number:
                hypers[d.name] = float(d.value) * float(rng.uniform(0.5, 2.0))
        kwargs.update(hypers)
    try:
        net = cls(**kwargs)
    except Exception as e:  # noqa: BLE001
        if _refuses(e, source):
            return Result("rejected", f"the constructor refuses the values: {exc_line(e)}",
                          traceback.format_exc(limit=-3))
        return Result("construct_fail", exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    for d in program.of_kind("param"):
        if d.name in built and d.init == "random":  # per layer (learn K untied): its copies start equal
            value = _as_array(getattr(net, d.name))
            params[d.name] = value[0] if d.per_layer else value
    # learn NAME untied: make the copies differ (each scaled by [0.8, 1.25], signs kept), so a layer that
    # reads another layer's copy is a mismatch; the reference gets them as weights
    per_layer_values = {}
    for d in program.decls:
        copies = getattr(net, d.name, None)
        if d.per_layer and d.kind in ("param", "hyper") and isinstance(copies, (torch.Tensor, torch.nn.ParameterList)):
            with torch.no_grad():
                for copy in copies:  # a stacked tensor's slices, or a ParameterList's parameters
                    copy.mul_(torch.as_tensor(rng.uniform(0.8, 1.25, tuple(copy.shape)), dtype=copy.dtype))
            per_layer_values[d.name] = _as_array(copies).copy()
    inputs = {d.name: rng.standard_normal((BATCH,) + _resolve(d.shape, sizes)) for d in program.of_kind("input")}
    args = [torch.tensor(inputs[d.name]) for d in program.of_kind("input")]
    out_decl = program.decl(program.output)
    want_shape = (BATCH,) + _resolve(out_decl.shape, sizes)
    try:
        with torch.no_grad():
            out = net(*args)
            traced = net(*args, trace=True)
    except Exception as e:  # noqa: BLE001
        if _is_singular(e):  # torch refuses a singular system: fine where the problem is singular
            return _singular_verdict(e, hooks, program, net, inputs, params, hypers, per_layer_values, steps,
                                     sizes, rng, source)
        if _refuses(e, source) and _raised_in(e) != "forward":  # a runtime helper's own check of the sizes
            # drawn (conv's reflect border needs images above half the filter): a clear refusal, not a crash;
            # forward's own checks of the inputs' shapes stay failures (the inputs have the declared shapes)
            return Result("rejected", f"the module refuses the input: {exc_line(e)}", traceback.format_exc(limit=-3))
        return Result("run_fail", exc_line(e), traceback.format_exc(limit=-3) + "\n" + source)
    layers = steps if steps is not None else 1
    if getattr(program, "until", None) is not None and isinstance(traced, (list, tuple)) \
            and 1 <= len(traced) <= layers:
        layers = len(traced)  # `unroll until`: the iterations until every sample converged, at most `steps`
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != want_shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return Result("run_fail", f"forward returned {got}, expected {want_shape}", source)
    if not isinstance(traced, (list, tuple)) or len(traced) != layers or any(
            not isinstance(t, torch.Tensor) or tuple(t.shape) != want_shape for t in traced):
        got = [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in traced] \
            if isinstance(traced, (list, tuple)) else type(traced).__name__
        return Result("run_fail", f"forward(trace=True) returned {one_line(str(got), 80)}, expected {layers} x "
                      f"{want_shape}", source)
    if params:  # the module follows the params' dtype: float32 params, float32 inputs -> float32 out
        try:
            net32 = cls(**{k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})
            with torch.no_grad():
                out32 = net32(*[a.float() for a in args])
        except ValueError as e:  # the constructor's own checks: a value float32 cannot hold (1e40/L = inf), a
            # Hessian positive definite in float64 but singular in float32
            if "must be finite" not in str(e) and not _refuses(e, source):
                return Result("run_fail", f"float32: {exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        except RuntimeError as e:  # a value past float32's range (lam = 1e40) is float32's limit, not dpc's
            if "without overflow" not in str(e):
                return Result("run_fail", f"float32: {exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        except Exception as e:  # noqa: BLE001
            return Result("run_fail", f"float32: {exc_line(e)}", traceback.format_exc(limit=-3) + "\n" + source)
        else:
            if not isinstance(out32, torch.Tensor) or out32.dtype != torch.float32:
                got = out32.dtype if isinstance(out32, torch.Tensor) else type(out32).__name__
                return Result("run_fail", f"float32 params and inputs, the output is {got}", source)
    if steps is not None and steps >= 2:  # forward(steps=s) is the trace's layer s
        s = int(rng.integers(1, steps))
        try:
            with torch.no_grad():
                partial = net(*args, steps=s)
        except Exception as e:  # noqa: BLE001
            return Result("run_fail", f"forward(steps={s}): {exc_line(e)}", traceback.format_exc(limit=-3))
        s_done = min(s, len(traced))  # `unroll until` may converge before s iterations
        diff = compare(_as_array(partial), _as_array(traced[s_done - 1]), f"forward(steps={s}) vs trace[{s_done - 1}]")
        if diff is not None:
            return Result("mismatch", one_line(diff), f"{diff}\n\n{source}")
    # --- compare with the reference ---
    phase("reference")
    reference = hooks.reference()
    weights, extra = _reference_arguments(reference, program, net, per_layer_values, sizes)
    try:
        want = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                  **extra)
        want_trace = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                        trace=True, **extra)
    except np.linalg.LinAlgError as e:  # singular to working precision: the module solved noise
        return Result("ill_conditioned", f"the reference's linear system is singular: {exc_line(e)}")
    except Exception as e:  # noqa: BLE001
        kind = "ReferenceError" if type(e).__name__ == "ReferenceError" else "raised"
        return Result("reference_missing", f"{kind}: {exc_line(e)}" if kind == "raised" else exc_line(e),
                      traceback.format_exc(limit=-3))
    got = _as_array(out)
    want = np.asarray(want, dtype=float)
    if np.isfinite(want).all() and not np.isfinite(got).all():
        return Result("run_fail", "non-finite output where the reference is finite", f"{got}\n{want}\n{source}")
    # the scale of the comparison: the outputs, and the program's own constants (a start of 1e40 that
    # cancels down to 1e24 leaves rounding errors of 1e24, right in float64)
    floor = max(1e-3, _constant_scale(program))
    # learned RBF functions (learn influence / shrink): the module sums the 10 centres nearest each value, the
    # reference all of them (within 7.5e-6 max|W|, docs/language.md)
    from dpc import atoms
    rbf = [d.name for d in program.of_kind("weight") if isinstance(d.value, atoms.RbfFit)]
    rtol = RBF_RTOL if rbf else RTOL
    if rbf:  # the local sum's error is a fraction of max|W| (not of the output): W's scale is a floor too
        floor = max([floor] + [float(np.abs(_as_array(getattr(net, name))).max()) for name in rbf])
    diff = compare(got, want, "forward", floor, rtol)
    if diff is None:
        want_trace = [np.asarray(w, dtype=float) for w in want_trace]
        if len(want_trace) != len(traced):
            diff = f"trace: {len(traced)} layers, reference {len(want_trace)}"
        for k, (g, w) in enumerate(zip(traced, want_trace)):
            diff = diff or compare(_as_array(g), w, f"trace[{k}]", floor, rtol)
    if diff is None and program.objective is not None and hasattr(net, "objective"):
        diff = _compare_objective(net, program, reference, inputs, params, rng, sizes, dict(extra, hypers=hypers))
        if isinstance(diff, Result):
            return diff
    if diff is not None and diff.startswith(("forward", "trace")):
        unstable = _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra, want,
                                    floor, rng)
        if unstable is None:
            unstable = _rounding_in_solves(reference, program, inputs, params, hypers, weights, steps, extra,
                                           traced, want_trace, rng)
        if unstable is not None:
            return Result("ill_conditioned", unstable, f"{diff}\n\n{unstable}\n\n{source}")
    if diff is not None:
        return Result("mismatch", one_line(diff), f"{diff}\n\ninputs/params seed {seed}, sizes {sizes}, "
                      f"hypers {hypers or 'defaults'}\n\n{source}")
    return Result("ok", "", verified=True)


def _reference_arguments(reference, program, net, per_layer_values, sizes):
    """(weights, extra keyword arguments) for reference.evaluate: the module's learned weights and per-layer
    copies as they are, and the dims no param or input fixes (the module took them as ints)."""
    weights = dict(per_layer_values)
    for d in program.of_kind("weight"):
        value = getattr(net, d.name, None)
        if value is not None:
            weights[d.name] = _as_array(value)
    return weights, {"dims": dict(sizes)}


def _is_singular(error) -> bool:
    """A linear-algebra error of a singular (or not positive-definite) matrix, from torch or numpy."""
    text = str(error).lower()
    return "LinAlgError" in type(error).__name__ and any(
        word in text for word in ("singular", "positive-definite", "positive definite", "not invertible"))


def _singular_verdict(error, hooks, program, net, inputs, params, hypers, per_layer_values, steps, sizes, rng,
                      source) -> Result:
    """The module refused a singular system: ill_conditioned where the reference is singular too (or jumps
    under a 1e-12 perturbation), else a run_fail."""
    import numpy as np
    failed = Result("run_fail", exc_line(error), source)
    reference = hooks.reference()
    weights, extra = _reference_arguments(reference, program, net, per_layer_values, sizes)
    try:
        want = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights, steps=steps,
                                  **extra)
    except np.linalg.LinAlgError:
        return Result("ill_conditioned", f"singular in the module and in the reference: {exc_line(error)}")
    except Exception:  # noqa: BLE001
        return failed
    unstable = _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra,
                                np.asarray(want, dtype=float), max(1e-3, _constant_scale(program)), rng)
    return Result("ill_conditioned", f"{exc_line(error)}; {unstable}") if unstable else failed


def _ill_conditioned(reference, program, inputs, params, hypers, weights, steps, extra, want, floor, rng,
                     tries: int = 4, relative: float = 1e-12):
    """A description when the reference itself moves by more than the tolerance under perturbations of
    every input, param and learned weight by `relative` of its scale, else None.

    Such a point sits on a discontinuity (two entries of |v| tied for a support selection, |v| = t for a
    hard threshold) or a singular linear system (a ridge weight of 1e-30): rounding alone decides the answer, so a module that computes in another order may
    differ from the reference without either being wrong. Real miscompilations are not stable under
    perturbation either way, but they do not make the *reference* jump, so they stay mismatches."""
    import numpy as np

    def jitter(values):
        out = {}
        for name, value in values.items():
            array = np.asarray(value, dtype=float)
            if array.dtype.kind == "f" and array.size:
                noise = rng.standard_normal(array.shape) * relative * max(float(np.abs(array).max()), 1e-300)
                value = array + noise
            out[name] = value
        return out
    for _ in range(tries):
        try:
            moved = reference.evaluate(program, jitter(inputs), params=jitter(params), hypers=hypers,
                                       weights=jitter(weights), steps=steps, **extra)
        except np.linalg.LinAlgError as e:  # a matrix singular to working precision: a solve of noise
            return f"ill-conditioned: a perturbation of {relative:g} makes the reference fail ({e})"
        except Exception:  # noqa: BLE001 - the unperturbed point evaluated; a perturbed one is no evidence
            return None
        jump = compare(np.asarray(moved, dtype=float), want, "perturbed reference", floor)
        if jump is not None:
            return f"ill-conditioned: a perturbation of {relative:g} moves the reference itself ({jump})"
    return None


def _rounding_in_solves(reference, program, inputs, params, hypers, weights, steps, extra, traced, want_trace, rng,
                        tries: int = 4):
    """A description when the module's largest distance from the reference (over every layer of the trace) is
    within SOLVE_MARGIN times how far the reference itself moves when each of its conjugate-gradient steps' A p is
    perturbed at rounding level (SOLVE_ROUNDING, reference.perturbed_solves), else None.

    An unconverged CG amplifies the rounding of its early steps (fuzz operator program 50, seed 20261206: 20 steps
    on a 30-unknown system, cond 16.7, turn 1e-16 differences in A p into 2e-9 in x, the module and the reference
    each ~1e-9 from the same CG in 60 digits). The module sums A p in torch's order, the reference in numpy's:
    neither is wrong. A program without CG never moves (no verdict); a real difference (another start, another
    number of steps, a wrong adjoint: 1e-6 or more) is far beyond the spread, so it stays a mismatch."""
    import numpy as np
    perturbed = getattr(reference, "perturbed_solves", None)
    if perturbed is None or not isinstance(traced, (list, tuple)) or len(traced) != len(want_trace):
        return None
    got = [_as_array(t) for t in traced]
    want = [np.asarray(w, dtype=float) for w in want_trace]
    if not all(np.isfinite(g).all() and np.isfinite(w).all() and g.shape == w.shape for g, w in zip(got, want)):
        return None
    off = max(float(np.abs(g - w).max(initial=0)) for g, w in zip(got, want))
    spread = 0.0
    for _ in range(tries):
        try:
            with perturbed(rng, SOLVE_ROUNDING):
                moved = reference.evaluate(program, inputs, params=params, hypers=hypers, weights=weights,
                                           steps=steps, trace=True, **extra)
        except Exception:  # noqa: BLE001 - the unperturbed point evaluated; a perturbed one is no evidence
            return None
        moved = [np.asarray(m, dtype=float) for m in moved]
        if len(moved) != len(want) or any(m.shape != w.shape for m, w in zip(moved, want)):
            return None
        spread = max([spread] + [float(np.abs(m - w).max(initial=0)) for m, w in zip(moved, want)])
    if spread > 0 and off <= SOLVE_MARGIN * spread:
        return (f"rounding in an iterative solve: the module is {off:.2e} from the reference, which moves by up to "
                f"{spread:.2e} itself when its CG steps' A p are perturbed by {SOLVE_ROUNDING:.2g} relative "
                f"(within {SOLVE_MARGIN}x)")
    return None


def _compare_objective(net, program, reference, inputs, params, rng, sizes, extra):
    """net.objective(inputs..., states...) against reference.evaluate_objective, at feasible-looking states
    (softmax rows: positive, summing to 1, inside any box(0, 1))."""
    import numpy as np
    import torch
    try:
        names = [n for n in inspect.signature(net.objective).parameters]
    except (TypeError, ValueError):
        return None
    states = {}
    for d in program.states:
        if d.name in names:
            shape = (BATCH,) + _resolve(d.shape, sizes)
            raw = rng.standard_normal(shape)
            states[d.name] = np.exp(raw) / np.exp(raw).sum(-1, keepdims=True) if d.shape else raw
    args = []
    for n in names:
        if n in inputs:
            args.append(torch.tensor(inputs[n]))
        elif n in states:
            args.append(torch.tensor(states[n]))
        else:
            return None
    try:
        with torch.no_grad():
            got = net.objective(*args)
    except Exception as e:  # noqa: BLE001
        if type(e) is ValueError and _raised_in(e).startswith("_"):  # a runtime helper's check of the sizes drawn:
            # the objective convolves images forward never did (a zero start folded the first layer's conv away)
            return Result("rejected", f"the module's objective refuses the input: {exc_line(e)}",
                          traceback.format_exc(limit=-3))
        return Result("run_fail", f"objective: {exc_line(e)}", traceback.format_exc(limit=-3))
    try:
        want = reference.evaluate_objective(program, inputs, states, params=params, **extra)  # hypers= too
    except Exception as e:  # noqa: BLE001
        return Result("reference_missing", f"objective: {exc_line(e)}", traceback.format_exc(limit=-3))
    got = _as_array(got)
    if got.shape != (BATCH,):
        return Result("run_fail", f"objective returned shape {got.shape}, expected ({BATCH},)")
    return compare(got, want, "objective")
