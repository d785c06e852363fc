@echo off
rem Lookalike for Windows: double-click to install (first time) and start.
rem Arguments are passed on, e.g.  run.bat --images D:\Designs --port 5050
setlocal
cd /d "%~dp0"
if not exist .venv\Scripts\python.exe (
  echo Creating the Python environment in .venv ...
  py -3 -m venv .venv 2>nul || python -m venv .venv
  if errorlevel 1 (
    echo Python 3.10 or newer is needed: https://www.python.org/downloads/
    pause
    exit /b 1
  )
)
echo Installing requirements (the first time takes a few minutes) ...
.venv\Scripts\python.exe -m pip install --disable-pip-version-check -q -r requirements.txt
if errorlevel 1 (
  echo Installing the requirements failed; see the messages above.
  pause
  exit /b 1
)
set PORT=5050
if defined LOOKALIKE_PORT set PORT=%LOOKALIKE_PORT%
rem A --port flag overrides the environment, as in image.py.
set NEXT_IS_PORT=
for %%A in (%*) do (
  if defined NEXT_IS_PORT set PORT=%%~A
  set NEXT_IS_PORT=
  if /i "%%~A"=="--port" set NEXT_IS_PORT=1
)
start "" /b cmd /c "timeout /t 4 /nobreak >nul & start http://127.0.0.1:%PORT%/"
.venv\Scripts\python.exe image.py serve %*
pause
