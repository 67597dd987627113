"""Errors the advisor reports to people: each message names what was wrong."""


class AdvisorError(Exception):
    """Base class: a message fit to show a user, never a traceback."""


class CatalogError(AdvisorError):
    """A catalog file is broken: the message names the file, the field and what was expected."""


class ModelNotFound(AdvisorError):
    """A model name that is neither a catalog id, a listed repo, nor a model folder."""


class ModelDirError(AdvisorError):
    """A local model folder lacks config.json or safetensors, or they cannot be read."""


class HubUnavailable(ModelNotFound):
    """The Hub cannot be asked now: unreachable, too slow, or already asked as often as allowed."""


class NeedsKey(AdvisorError):
    """The request names a local path, which only a caller with the API key may have looked up."""
