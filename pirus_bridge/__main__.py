from pirus_bridge.cli import main

main()
