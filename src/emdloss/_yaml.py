"""The one YAML reader of emdloss: plain data only, no anchors or aliases, bounded size.

Every YAML text emdloss reads (``--config`` files, a run's ``config.yaml``, ``compare``'s
train config, ``KEY=VALUE`` values) goes through :func:`load_yaml`. It is
:func:`yaml.safe_load` (no Python objects: a ``!!python/...`` tag is refused) with two more
refusals:

* anchors and aliases (``&a`` / ``*a``): a 1.3 KB "billion laughs" file of nested aliases
  expands into gigabytes once the options are copied (``dataclasses.asdict``); emdloss never
  writes them, and an option file has no need for them;
* texts over :data:`MAX_YAML_BYTES`.

Errors are one :class:`~emdloss.errors.UserError` naming the source, the line and the problem.
PyYAML is imported only when a text is read.
"""

from __future__ import annotations

from typing import Any

from emdloss.errors import UserError

__all__ = ["MAX_YAML_BYTES", "UnsafeYAMLError", "dump_yaml", "load_yaml"]

#: Largest YAML text read (an option file is a few kilobytes).
MAX_YAML_BYTES = 1 << 20


class UnsafeYAMLError(UserError):
    """YAML refused for what it could do, not for its syntax: an anchor or alias, a Python tag,
    a text over :data:`MAX_YAML_BYTES`."""


def _where(mark: Any) -> str:
    return f", line {mark.line + 1}" if mark is not None else ""


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` as plain data; refuse aliases, anchors, Python tags and huge texts.

    Parameters
    ----------
    text : str
        The YAML text.
    source : str
        What to call it in error messages (a file name, ``--data-option lr``).

    Returns
    -------
    object
        Plain data (mappings, lists, strings, numbers, booleans, None).

    Raises
    ------
    UserError
        One line naming ``source``, the line and the problem.

    Examples
    --------
    >>> load_yaml("lr: 0.1\\nhidden: [8, 8]", "c.yaml")
    {'lr': 0.1, 'hidden': [8, 8]}
    >>> load_yaml("a: &x [1]\\nb: *x", "c.yaml")
    Traceback (most recent call last):
    ...
    emdloss._yaml.UnsafeYAMLError: c.yaml, line 1: YAML anchors and aliases (&x) are refused; write the values out
    """
    import yaml

    if len(text) > MAX_YAML_BYTES:
        raise UnsafeYAMLError(
            f"{source}: {len(text)} characters, over the {MAX_YAML_BYTES} that are read"
        )
    try:
        # Events first (linear in the text, aliases unexpanded): refuse any anchor or alias
        # before a single node is built.
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                sign = "*" if isinstance(event, yaml.AliasEvent) else "&"
                raise UnsafeYAMLError(
                    f"{source}{_where(event.start_mark)}: YAML anchors and aliases "
                    f"({sign}{anchor}) are refused; write the values out"
                )
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as error:  # a tag such as !!python/object
        problem = " ".join(str(error.problem or "unknown tag").split())
        raise UnsafeYAMLError(
            f"{source}{_where(error.problem_mark)}: not plain YAML data: {problem}"
        ) from None
    except yaml.MarkedYAMLError as error:
        problem = " ".join(str(error.problem or error.context or "invalid YAML").split())
        raise UserError(
            f"{source}{_where(error.problem_mark)}: not valid YAML: {problem}"
        ) from None
    except yaml.YAMLError as error:
        raise UserError(f"{source}: not valid YAML: {' '.join(str(error).split())}") from None


def dump_yaml(data: Any) -> str:
    """YAML text of plain ``data``, block style, keys in order, never an anchor or alias.

    Examples
    --------
    >>> print(dump_yaml({"a": [1], "b": None}), end="")
    a:
    - 1
    b: null
    """
    import yaml

    class _NoAliases(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    text: str = yaml.dump(data, Dumper=_NoAliases, sort_keys=False, default_flow_style=False)
    return text
