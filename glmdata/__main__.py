from glmdata.cli import main

main()
