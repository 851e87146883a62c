"""Imported first by a command line, before anything else: bounds the BLAS thread pools and loads numpy under the
memory guard (:mod:`sttrl.native`). An import for its effect, on purpose: it has to run before the command's other
imports load numpy."""

from sttrl.native import bound_thread_pools, load_guarded

bound_thread_pools()
load_guarded(("numpy",), "the same command again (an unfinished run resumes where it stopped)")
