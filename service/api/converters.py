"""URL converters: names from URLs are checked by the router before any view sees them."""

from __future__ import annotations

from werkzeug.routing import BaseConverter


class ModelNameConverter(BaseConverter):
    regex = r"[a-z0-9][a-z0-9_-]{0,63}"


class VersionNumberConverter(BaseConverter):
    regex = r"[1-9][0-9]{0,8}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


class LabelNameConverter(BaseConverter):
    regex = r"[a-z0-9_-]{1,64}"


URL_CONVERTERS = {"model_name": ModelNameConverter, "version_number": VersionNumberConverter,
              "label_name": LabelNameConverter}
