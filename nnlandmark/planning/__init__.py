"""Planning: turn a validated dataset into an nnU-Net-planned, preprocessed project."""
from nnlandmark.planning.project import Project, prepare

__all__ = ["Project", "prepare"]
