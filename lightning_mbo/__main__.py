from lightning_mbo.cli import main
from lightning_mbo.console import quiet_lightning

if __name__ == "__main__":
    quiet_lightning()
    main()
