// The theme before the first paint (a classic script in <head>): the saved choice, else the
// system's (prefers-color-scheme). app.js handles the toggle.
(function () {
  var t = null;
  try { t = localStorage.getItem('losslens-theme'); } catch (e) { /* storage off */ }
  if (t !== 'light' && t !== 'dark') t = matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  document.documentElement.dataset.theme = t;
})();
