from amplint.launch import main

main()
