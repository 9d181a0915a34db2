from promptcl.cli import main

main()
