from benchmarks.main import main

main()
