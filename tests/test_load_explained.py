"""The class dpc.load compiles from a .dp file shows its derivation in Jupyter, as dpc.explain does, and is
otherwise the generated network class (instances, pickling, torch.compile)."""
import io

import torch

import dpc
from conftest import EXAMPLES


def test_the_loaded_class_displays_its_derivation():
    Net = dpc.load(EXAMPLES / "lista.dp", overrides={"unroll": "4"})
    html, latex = Net._repr_html_(), Net._repr_latex_()
    assert "<math" in html and "LISTA" in html
    assert latex.lstrip().startswith(r"\begin{align*}") and r"\operatorname{soft}" in latex
    assert dpc.explain(EXAMPLES / "lista.dp", unroll=4)._repr_latex_() == latex
    # IPython's display looks the method up on the class object itself: a bound method of the metaclass
    import inspect
    import types
    assert inspect.isclass(Net) and isinstance(Net._repr_html_, types.MethodType)


def test_the_loaded_class_is_still_the_network():
    Net = dpc.load(EXAMPLES / "lista.dp", overrides={"unroll": "4"})
    net = Net(D=torch.randn(5, 8, dtype=torch.float64))
    assert type(net).__name__ == "LISTA"
    assert not hasattr(net, "_repr_html_")  # an instance displays as any nn.Module
    x = torch.randn(3, 5, dtype=torch.float64)
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    assert torch.equal(again(x), net(x))
    assert set(Net.per_layer_parameters) == {"W", "S", "theta"}
