"""AST expression -> .dp text, for messages and notes (the inverse of the parser, modulo spacing)."""
from __future__ import annotations

from dpc.grammar import ast

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "@": 2, "^": 4}


def unparse(node: ast.Expr, parent: int = 0) -> str:
    if isinstance(node, ast.Number):
        return node.text
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.BinOp):
        p = _PREC[node.op]
        right_p = p + 1 if node.op in "-/@*" else p
        sep = node.op if node.op in "*/" else f" {node.op} "
        text = f"{unparse(node.left, p)}{sep}{unparse(node.right, right_p)}"
        if node.op == "^":
            text = f"{unparse(node.left, 5)}^{unparse(node.right, 4)}"
        return f"({text})" if p < parent else text
    if isinstance(node, ast.Neg):
        text = f"-{unparse(node.operand, 3)}"
        return f"({text})" if parent > 3 else text
    if isinstance(node, ast.Transpose):
        return f"{unparse(node.operand, 5)}.T"
    if isinstance(node, ast.Index):
        return f"{unparse(node.operand, 5)}[{node.index}]"
    if isinstance(node, ast.Call):
        parts = [unparse(a) for a in node.args] + [f"{k} = {unparse(v)}" for k, v in node.kwargs]
        return f"{node.func}({', '.join(parts)})"
    if isinstance(node, ast.IndexSum):
        text = f"sum_{node.index} {unparse(node.body, 2)}"
        return f"({text})" if parent > 1 else text
    raise TypeError(f"cannot unparse {type(node).__name__}")
