"""What cloud platforms set in a container's environment that stands for one of our settings.

Vertex AI names the port in AIP_HTTP_PORT, SageMaker in SAGEMAKER_BIND_TO_PORT and Azure ML mounts
the registered model at AZUREML_MODEL_DIR: read only when our own variable is unset, so the image
needs no per-platform entry point. ``Config.from_env`` applies it; nothing else reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

#: Variables a cloud platform sets that stand for one of ours when ours is unset: Vertex AI's
#: port (https://cloud.google.com/vertex-ai/docs/predictions/custom-container-requirements) and
#: SageMaker's (https://docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html).
PLATFORM_PORTS = ("AIP_HTTP_PORT", "SAGEMAKER_BIND_TO_PORT")


def with_platform_defaults(environ: Mapping[str, str]) -> Mapping[str, str]:
    """``environ`` with PORT and ARTIFACTS_DIR taken from a platform's variables when unset.

    Azure ML mounts the registered model at ``AZUREML_MODEL_DIR``, with the registered folder
    inside it (https://learn.microsoft.com/azure/machine-learning/how-to-deploy-custom-container):
    a registry registered as ``artifacts`` is served from there.
    """
    extra: dict[str, str] = {}
    if "PORT" not in environ:
        port = next((environ[name] for name in PLATFORM_PORTS if environ.get(name)), None)
        if port is not None:
            extra["PORT"] = port
    if "ARTIFACTS_DIR" not in environ and environ.get("AZUREML_MODEL_DIR"):
        mounted = Path(environ["AZUREML_MODEL_DIR"])
        extra["ARTIFACTS_DIR"] = str(mounted / "artifacts" if (mounted / "artifacts").is_dir() else mounted)
    return {**environ, **extra} if extra else environ
