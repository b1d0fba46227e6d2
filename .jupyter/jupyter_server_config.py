# The configuration `make lab` runs JupyterLab with (JUPYTER_CONFIG_DIR=.jupyter), so that it starts
# the same on every machine:
# - as root too (containers and CI machines run so): Jupyter refuses root unless told;
# - notebooks cleaned on save by nbdev (settings.ini `jupyter_hooks`), registered once. nbdev_install_hooks
#   writes `c.ContentsManager.pre_save_hook = nbdev_clean_jupyter` into ~/.jupyter's server and notebook
#   configs; JupyterLab 4 applies the configuration again as each server extension loads, and
#   jupyter_server warns "Overriding existing pre_save_hook" every time after the first. A hook
#   registered by the contents manager itself is not configuration, and is set once.
import os

from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager


class NbdevCleaningContentsManager(AsyncLargeFileManager):
    "The default contents manager, with nbdev's notebook cleaning as its pre-save hook."
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        try: from nbdev.clean import clean_jupyter
        except ModuleNotFoundError: return
        self.register_pre_save_hook(clean_jupyter)


c.ServerApp.contents_manager_class = NbdevCleaningContentsManager
c.ServerApp.allow_root = os.geteuid() == 0
