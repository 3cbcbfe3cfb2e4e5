"""The package's own exceptions. Library code raises them; only the CLI turns them into a message and exit code 2."""


class SkinsynthError(Exception):
    """Base class: a problem the user can fix (bad input, wrong path, conflicting run)."""


class RecipeError(SkinsynthError):
    """The recipe file is missing, unreadable or invalid."""


class PipelineError(SkinsynthError):
    """A model could not be loaded, or is not the kind of pipeline that was asked for."""


class OutputError(SkinsynthError):
    """The output directory cannot be used: unwritable, locked, or holding another run."""


class DatasetError(SkinsynthError):
    """A dataset is missing, incomplete, damaged, or does not match what was asked."""


class ShortfallError(SkinsynthError):
    """An image could not be made within the recipe's `max_attempts`: its class and attribute cell would come up short."""


class HubError(SkinsynthError):
    """The Hugging Face Hub refused or could not complete a request (login, permissions, network)."""


class PrivacyError(SkinsynthError):
    """A synthetic dataset would be published without a check for copies of its model's training images."""
