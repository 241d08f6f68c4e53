"""The .dp front end: grammar (dp.lark), typed AST with spans (ast.py), parser (parser.py)."""


def parse(text, file="<string>"):
    """Parse .dp source into a typed AST (see parser.parse)."""
    from dpc.grammar.parser import parse as _parse
    return _parse(text, file)


def parse_file(path):
    from dpc.grammar.parser import parse_file as _parse_file
    return _parse_file(path)
