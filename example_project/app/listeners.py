"""Which listener a message came in on: "mx" (mail for us) or "submission" (mail from our users).

Salmon routes by address only; the receivers in config/boot.py say the
listener's role in ``message.session``.
"""
import functools


def listener(role: str):
    """Goes below @stateless: the handler runs only for mail from the ``role`` listener."""
    def decorate(handler):
        @functools.wraps(handler)
        def on_listener(message, *args, **kwargs):
            session = getattr(message, "session", None)
            if getattr(session, "role", "mx") == role:
                return handler(message, *args, **kwargs)
            return None
        return on_listener
    return decorate
