from qslaw_pipe.cli import main

main()
