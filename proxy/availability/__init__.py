"""Availability: busy time, free slots and busy reasons computed from the local mirror (issue 7).

* :mod:`.instances` parses calendar objects and expands them into instances (pure);
* :mod:`.intervals` merges busy time, finds free slots and the reasons for an instant (pure);
* :mod:`.sources` judges each calendar's freshness (pure);
* :mod:`.index` reads the instances of a window from the SQL storage's instance index (and expands what it
  does not list);
* :mod:`.service` reads a user's calendars through it and applies the policy;
* :mod:`.routes` and :mod:`.freebusy` are the HTTP edges (JSON API, CalDAV free-busy-query).
"""
