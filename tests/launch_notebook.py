"""Plays a notebook for tests/test_launch.py: runs codext.launch's workers on a job given
as JSON in argv[1] ({"job": ..., "nprocs": ...}, or {"launch": Config fields, "nprocs":
...} for a real codext.launch training run) and prints what happened (KeyboardInterrupt,
an error or the result)."""
import json
import signal
import sys

from codext.launch import run_workers

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    # Ctrl-C raises KeyboardInterrupt here, as in a Jupyter kernel (which installs its own
    # handler), even when this process was started with SIGINT ignored: a shell's
    # background job (`cmd &` without job control, nohup) passes SIG_IGN on to what it runs,
    # and Python then installs no handler of its own
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    try:
        if "launch" in args:  # a real training run: codext.launch(Config(**launch), ...)
            import codext
            result = codext.launch(codext.Config(**args["launch"]), nprocs=args["nprocs"],
                                   timeout=args.get("timeout"),
                                   log=lambda line: print(line, flush=True))
            print("RESULT", json.dumps({"epochs": len(result.history["epoch"])}), flush=True)
        else:
            result = run_workers(args["job"], args["nprocs"], timeout=args.get("timeout"),
                                 log=lambda line: print(line, flush=True),
                                 env=args.get("env"))
            print("RESULT", json.dumps(result), flush=True)
    except KeyboardInterrupt:
        print("KEYBOARD-INTERRUPT", flush=True)
    except Exception as e:
        print("ERROR", type(e).__name__, e, flush=True)
