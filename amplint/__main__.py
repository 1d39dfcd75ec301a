from amplint.cli import main

main()
