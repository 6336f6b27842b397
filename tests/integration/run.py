"""Runs every test_* function of tests/integration/test_*.py, each with a time limit.
Last line: "integration: N passed, M failed"."""
import importlib.util
import os
import signal
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class Timeout(Exception):
    pass


def on_alarm(*_):
    raise Timeout("test took longer than its time limit")


def main():
    only = sys.argv[1:]
    passed = failed = 0
    signal.signal(signal.SIGALRM, on_alarm)
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        spec = importlib.util.spec_from_file_location(fn[:-3], os.path.join(HERE, fn))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in [n for n in dir(mod) if n.startswith("test_")]:
            full = "%s.%s" % (fn[:-3], name)
            if only and not any(o in full for o in only):
                continue
            t0 = time.time()
            signal.alarm(getattr(getattr(mod, name), "timeout", 60))
            try:
                getattr(mod, name)()
                passed += 1
                print("PASS %s (%.2fs)" % (full, time.time() - t0), flush=True)
            except BaseException as e:  # noqa
                failed += 1
                print("FAIL %s (%.2fs): %s" % (full, time.time() - t0, e), flush=True)
                traceback.print_exc()
                sys.stdout.flush()
            finally:
                signal.alarm(0)
    print("integration: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
