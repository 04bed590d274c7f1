"""Replay a HAR recording against a CalDAV server and report how its answers differ from the recorded ones.

``normalize`` and ``compare`` are pure (bodies → facts, recorded vs. received); ``runner`` sends the requests;
``cli`` is the ``calrelay replay`` command.
"""
