from demo.consortium import main

main()
