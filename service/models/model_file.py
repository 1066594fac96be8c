"""Load the estimator a user hands to packaging, and learn which scikit-learn pickled it.

scikit-learn stores its version in each estimator's pickled state (``_sklearn_version``) and
warns (``InconsistentVersionWarning``) when another version unpickles it. Packaging catches
that warning, keeps the version it names, and reports it as one line; a file joblib cannot read
is one line naming the file. Loading only: no checks of the model's quality or schema.
"""

from __future__ import annotations

import pickle  # nosec B403  # only for pickle.UnpicklingError; packaging loads the packager's own model file
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sklearn
from sklearn.exceptions import InconsistentVersionWarning


@dataclass
class LoadedModel:
    """A model as loaded, the scikit-learn version that pickled it and what loading warned."""

    model: Any
    pickled_with: str
    warnings: list[str] = field(default_factory=list)


def load_model(path: Path) -> LoadedModel:
    """Unpickle ``path`` with joblib; raise ``ValueError`` naming the file when it is not a joblib model."""
    import joblib

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = joblib.load(path)
        except (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError, TypeError, OSError) as exc:
            raise ValueError(f"--model {path} is not a joblib file of a fitted estimator "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
        except (ModuleNotFoundError, AttributeError) as exc:
            raise ValueError(f"--model {path} needs code this environment lacks: {exc}") from None
    return inspect_warnings(model, caught, str(path))


def inspect_warnings(model: Any, caught: list[warnings.WarningMessage], source: str) -> LoadedModel:
    """Turn the warnings unpickling raised into one line each, noting the version that pickled the model."""
    pickled_with, lines, seen = sklearn.__version__, [], set()
    for item in caught:
        message = item.message
        if isinstance(message, InconsistentVersionWarning):
            pickled_with = message.original_sklearn_version
            line = (f"{source} was pickled by scikit-learn {pickled_with}; this environment runs "
                    f"{message.current_sklearn_version}: it is evaluated and saved under "
                    f"{message.current_sklearn_version} (retrain there to be sure)")
        else:
            line = f"{source}: {type(message).__name__}: {str(message).splitlines()[0]}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return LoadedModel(model, pickled_with, lines)


def pickled_version(model: Any) -> str:
    """The scikit-learn version an in-memory estimator's pickle would declare (this environment's)."""
    state = model.__getstate__() if hasattr(model, "__getstate__") else {}
    return str(state.get("_sklearn_version", sklearn.__version__)) if isinstance(state, dict) else sklearn.__version__
