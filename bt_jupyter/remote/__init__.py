"""Live sessions: notebook cells that run in a live job's kernels (``%bt_session``,
``%%bt_remote``). See session.py."""

from bt_jupyter.remote.session import LiveSession, NodeOutput, attach, plan, start

__all__ = ["LiveSession", "NodeOutput", "attach", "plan", "start"]
