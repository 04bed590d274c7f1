"""CalDAV features plain Radicale lacks, answered by calrelay's front door (docs/interop.md).

Each feature is a small module. :mod:`.reports` is the one list of the REPORTs calrelay answers itself (for
a guard that refuses unknown REPORTs to consult); :mod:`.middleware` dispatches them.
"""
