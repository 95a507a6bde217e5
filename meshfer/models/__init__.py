"""Model cards, the registry of shipped models, and loading/saving them."""

from .card import TASKS, ModelCard
from .registry import default_card, get_card, list_models, load_model, models_dir, verify_file

__all__ = ["TASKS", "ModelCard", "default_card", "get_card", "list_models", "load_model", "models_dir", "verify_file"]
