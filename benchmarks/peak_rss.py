"""Run a stage script in this process and print its peak resident memory in MB as the last line."""

import resource
import runpy
import sys

if __name__ == "__main__":
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
