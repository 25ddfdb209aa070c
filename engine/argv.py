"""Normalise command lines before click parses them.

Terraform's and OpenTofu's single-dash options (`-out=FILE`, `-auto-approve`) become their
`--` spellings, and the global options (`-C DIR`, `--state`, `--provider`, `--no-color`) are
accepted after the command as well as before it by moving them to the front.
"""

from __future__ import annotations

TERRAFORM_OPTIONS = (
    "out",
    "auto-approve",
    "detailed-exitcode",
    "lock-timeout",
    "parallelism",
    "target",
    "exclude",
    "replace",
    "refresh",
    "input",
    # Terraform users type these out of habit too. Without them, click would read -no-color as
    # dstack's -n with the value "o-color".
    "no-color",
    "json",
)
GLOBAL_WITH_VALUE = ("-C", "--state", "--provider")
GLOBAL_FLAGS = ("--no-color",)


def normalise(args: list[str]) -> list[str]:
    return hoist_global_options([_long_form(arg) for arg in _until_double_dash(args)] + _after_double_dash(args))


def _until_double_dash(args: list[str]) -> list[str]:
    return args[: args.index("--")] if "--" in args else list(args)


def _after_double_dash(args: list[str]) -> list[str]:
    return args[args.index("--") :] if "--" in args else []


def _long_form(arg: str) -> str:
    if not arg.startswith("-") or arg.startswith("--"):
        return arg
    name = arg[1:].split("=", 1)[0]
    return "-" + arg if name in TERRAFORM_OPTIONS else arg


def hoist_global_options(args: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        if arg in GLOBAL_FLAGS:
            front.append(arg)
        elif arg in GLOBAL_WITH_VALUE and index + 1 < len(args):
            front.extend(args[index : index + 2])
            index += 1
        elif any(arg.startswith(option + "=") for option in GLOBAL_WITH_VALUE if option.startswith("--")):
            front.append(arg)
        elif arg.startswith("-C") and len(arg) > 2:
            front.extend(["-C", arg[2:]])
        else:
            rest.append(arg)
        index += 1
    return front + rest
